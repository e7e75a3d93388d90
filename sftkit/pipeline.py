"""The data path in one place: load, map to the spec, render, mask, tokenize.

    request = DataRequest("train.jsonl", spec="alpaca")            # what to read
    render = RenderSettings(model="smollm2-135m", max_length=1024)  # how to render it
    prepared = prepare(request, render)   # every component and option checked, tokenizer loaded once
    store = prepared.load()               # the examples, in chunks (validate and train walk these)
    encoded = encode_chunk(store, chunk, prepared.encoder)   # segments, weights and tokens per row

``sftkit validate``, ``preview``, ``train`` and ``eval`` all start from ``prepare``, so what a
user previews is exactly what trains, and ``train`` trains the very encodings it validated.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from itertools import chain
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Mapping

from sftkit.errors import DataError, UsageError
from sftkit.registry import Registry, get_registry
from sftkit.spec import DatasetSpec, examples_from_records, load_spec, resolve_spec
from sftkit.store import CHUNK_ROWS, Chunk, ExampleStore, load_store
from sftkit.tokenize import context_for, mask, render, tokenize_many, tokenize_seq2seq
from sftkit.types import Example, RenderContext, Segment, TokenizedExample

DEFAULT_MAX_LENGTH = 1024  # TRL SFTConfig's default max_length: validate and train use it when none is given


@dataclass(frozen=True)
class DataRequest:
    """What data to read: a file or folder, its spec and column mapping, the loader and its options.

    ``spec`` is a built-in spec name, a YAML path, a ``DatasetSpec`` (a run folder's saved spec)
    or None (detected from the first record's columns). ``columns`` maps canonical fields to
    source columns (``{"output": "label"}``); ``instruction`` is a constant instruction.
    ``options_from`` names where ``loader_options`` came from when not the command line (``the
    recipe r.yaml, key loader_options``), for messages about their values.
    """

    path: str = ""
    spec: str | DatasetSpec | None = None
    columns: Mapping[str, str] = field(default_factory=dict)
    instruction: str | None = None
    loader: str | None = None
    loader_options: Mapping[str, Any] = field(default_factory=dict)
    skip_invalid: bool = False
    options_from: str = ""

    def for_path(self, path: str | Path, spec: str | DatasetSpec | None = None) -> "DataRequest":
        """The same reading settings for another file (with its own spec, if given)."""
        return dataclasses.replace(self, path=str(path), spec=spec if spec is not None else self.spec)


@dataclass(frozen=True)
class RenderSettings:
    """How to render, mask and tokenize: template and masking strategy (with options), the model
    whose tokenizer is used (None: no tokenizer), max length, special tokens, remote code.

    ``template=None`` is the spec's template; ``masking=None`` the strategy that declares itself
    the default (``completion_only`` among the built-ins). ``options_from`` names where
    ``template_options`` and ``masking_options`` came from when not the command line
    (``{"masking_options": "the recipe r.yaml, key masking_options"}``), for messages.
    """

    template: str | None = None
    template_options: Mapping[str, Any] = field(default_factory=dict)
    masking: str | None = None
    masking_options: Mapping[str, Any] = field(default_factory=dict)
    model: str | None = None
    max_length: int | None = None
    max_source_length: int | None = None  # encoder-decoder models: the encoder input (default: max_length)
    max_target_length: int | None = None  # encoder-decoder models: the decoder target (default: max_length)
    add_special_tokens: bool = False
    trust_remote_code: bool = False
    options_from: Mapping[str, str] = field(default_factory=dict)

    def sources(self, key: str) -> dict[str, str]:
        """Where each of ``template_options`` or ``masking_options`` came from (see ``options_from``)."""
        return option_sources(getattr(self, key), self.options_from.get(key, ""))


def option_sources(options: Mapping[str, Any], place: str) -> dict[str, str]:
    """``{option: "PLACE.option"}`` (PLACE: ``the spec s.yaml, key loader_options``) for messages
    about options read from a file; nothing when ``place`` is empty."""
    return {name: f"{place}.{name}" for name in options} if place else {}


# -- reading ------------------------------------------------------------------------------------

def choose_loader(path: Path, name: str | None = None, options: Mapping | None = None,
                  registry: Registry | None = None, *, sources: Mapping[str, str] | None = None) -> Callable:
    """The loader named ``name``, or the one whose suffixes or ``matches`` fit the path, with its
    options checked (``sources``: where each came from, for messages)."""
    registry = registry or get_registry()
    if name:
        return registry.resolve("loaders", name, dict(options or {}), sources=sources)
    loaders = registry.components("loaders")
    for comp in loaders.values():
        matches = comp.attribute("matches")
        if matches is not None and matches(path):
            return comp.bind(dict(options or {}), sources=sources)
    suffix = path.suffix.lower()
    for comp in loaders.values():
        if suffix in tuple(comp.attribute("suffixes") or ()):
            return comp.bind(dict(options or {}), sources=sources)
    raise UsageError(f"no loader for {path} (suffix {suffix or 'none'})",
                     hint="choose one with --loader NAME; loaders: " + ", ".join(sorted(loaders)))


@dataclass
class OpenedData:
    """A data file opened lazily: its spec, how the spec was chosen, the records not yet read,
    and the broken lines left out so far (with ``skip_invalid``)."""

    request: DataRequest
    spec: DatasetSpec
    note: str
    records: Iterator[dict]
    skipped: list[DataError] = field(default_factory=list)

    def examples(self) -> Iterator[Example]:
        """The records mapped to Examples (row numbers from 0), read lazily, once."""
        return examples_from_records(self.records, self.spec)


def load_records(request: DataRequest, registry: Registry | None = None, *,
                 skipped: list[DataError] | None = None) -> Iterator[dict]:
    """The raw records of ``request.path``, lazily, through the loader the request (or its named
    spec) chooses, with its options (the request's own win over the spec's).

    With ``skip_invalid``, a loader that supports it yields a DataError for each broken line,
    which is appended to ``skipped`` and left out of the records.
    """
    named = load_spec(request.spec) if request.spec is not None else None
    return _read(request, named, registry or get_registry(), skipped if skipped is not None else [])


def _read(request: DataRequest, named: DatasetSpec | None, registry: Registry, skipped: list) -> Iterator[dict]:
    from sftkit.io import check_readable

    path = Path(request.path)
    check_readable(path, folder=path.is_dir())
    loader = request.loader or (named.loader if named else None)
    spec_options = named.loader_options if named else {}
    options = {**spec_options, **request.loader_options}
    sources = {**option_sources(spec_options, f"the spec {named.source}, key loader_options" if named else ""),
               **option_sources(request.loader_options, request.options_from)}
    read = choose_loader(path, loader, options, registry, sources=sources)
    component = getattr(read, "component", None)
    wants_skip = request.skip_invalid and component is not None and "skip_invalid" in component.options()
    items = iter(read(path, skip_invalid=True) if wants_skip else read(path))
    return _records_only(items, skipped, request.skip_invalid)


def open_data(request: DataRequest, registry: Registry | None = None) -> OpenedData:
    """Open a dataset: resolve its spec (named, given, or detected from the first record) and
    read its records lazily (``load_records``); broken lines left out with ``skip_invalid``
    are collected in ``skipped`` as the records are read."""
    named = load_spec(request.spec) if request.spec is not None else None
    skipped: list[DataError] = []
    records = _read(request, named, registry or get_registry(), skipped)
    try:
        first = next(records)
    except StopIteration:
        raise DataError("the dataset has no records", path=request.path, hint="check the file is not empty") from None
    chosen, note = resolve_spec(named, first, request.columns, request.instruction)
    return OpenedData(request, chosen, note, chain([first], records), skipped)


def _records_only(items: Iterator, skipped: list[DataError], skip_invalid: bool) -> Iterator[dict]:
    for item in items:
        if isinstance(item, DataError):
            if not skip_invalid:
                raise item
            skipped.append(item)
            continue
        yield item


# -- rendering and tokenizing --------------------------------------------------------------------

def generation_prompt(segments: list[Segment]) -> str:
    """The rendered prompt for inference: every segment before the final response's content."""
    last = max((s.turn for s in segments if s.role == "assistant"), default=None)
    for index, segment in enumerate(segments):
        if segment.role == "assistant" and segment.turn == last and segment.part in ("content", "end"):
            return "".join(s.text for s in segments[:index])
    return "".join(s.text for s in segments)


def end_of_turn(segments: list[Segment]) -> str:
    """The text that closes the final assistant turn (EOS or end-of-turn marker)."""
    ends = [s.text for s in segments if s.part == "end"]
    return ends[-1] if ends else ""


@dataclass
class Encoded:
    """One row on the data path: its segments, their loss weights, and its tokens."""

    segments: list[Segment]
    weights: list[float]
    tokens: TokenizedExample


@dataclass
class Encoder:
    """A template, a masking strategy and a tokenizer: Example -> segments -> tokens.

    ``encoder_decoder``: tokens for an encoder-decoder model (``sftkit.tokenize.tokenize_seq2seq``:
    the prompt is the encoder input, the final response the decoder target), each side cut at its
    own limit (``max_source_length``, ``max_target_length``; default ``max_length``).
    """

    template: Callable
    masking: Callable
    tokenizer: Any = None
    max_length: int | None = None
    context: RenderContext = field(default_factory=RenderContext)
    encoder_decoder: bool = False
    max_source_length: int | None = None
    max_target_length: int | None = None

    @property
    def source_limit(self) -> int | None:
        """The encoder input's token limit (encoder-decoder models)."""
        return self.max_source_length or self.max_length

    @property
    def target_limit(self) -> int | None:
        """The decoder target's token limit (encoder-decoder models)."""
        return self.max_target_length or self.max_length

    @classmethod
    def build(cls, *, template: str, masking: str | None = None, tokenizer: Any = None,
              max_length: int | None = None, template_options: Mapping | None = None,
              masking_options: Mapping | None = None, registry: Registry | None = None) -> "Encoder":
        """Resolve a template and a masking strategy by name (options checked before any work)."""
        registry = registry or get_registry()
        masking = masking or registry.default_name("masking_strategies")
        return cls(
            template=registry.resolve("templates", template, dict(template_options or {})),
            masking=registry.resolve("masking_strategies", masking, dict(masking_options or {})),
            tokenizer=tokenizer,
            max_length=max_length,
            context=context_for(tokenizer),
        )

    def with_tokenizer(self, tokenizer: Any) -> "Encoder":
        """The same template and masking with another tokenizer (a model's own, in eval)."""
        return dataclasses.replace(self, tokenizer=tokenizer, context=context_for(tokenizer))

    def segments(self, example: Example) -> list[Segment]:
        """Render one example."""
        return render(example, self.template, self.context)

    def weights(self, segments: list[Segment]) -> list[float]:
        """Loss weight per segment."""
        return mask(segments, self.masking)

    def encode_rows(self, examples: Iterable[Example]) -> list[Encoded]:
        """Render, mask and tokenize many examples (one tokenizer call), keeping the segments."""
        if self.tokenizer is None:
            raise UsageError("tokenizing needs a tokenizer", hint="pass --model")
        rendered = []
        for example in examples:
            segments = self.segments(example)
            rendered.append((segments, self.weights(segments)))
        if self.encoder_decoder:
            tokens = tokenize_seq2seq(rendered, self.tokenizer, self.source_limit, self.target_limit)
        else:
            tokens = tokenize_many(rendered, self.tokenizer, self.max_length)
        return [Encoded(segments, weights, tok) for (segments, weights), tok in zip(rendered, tokens)]

    def encode_many(self, examples: Iterable[Example]) -> list[TokenizedExample]:
        """Render, mask and tokenize many examples (one tokenizer call)."""
        return [row.tokens for row in self.encode_rows(examples)]

    def encode(self, example: Example) -> TokenizedExample:
        """Render, mask and tokenize one example."""
        return self.encode_many([example])[0]

    def prompt(self, example: Example) -> str:
        """The prompt exactly as rendered in training, minus the response."""
        return generation_prompt(self.segments(example))


def encode_chunk(store: ExampleStore, chunk: Chunk, encoder: Encoder) -> list[Encoded]:
    """The encoded rows of one chunk of a store: computed once, and kept when the store keeps
    encodings (a training run: the rows validation tokenized are the rows that train)."""
    kept = store.encodings
    if kept is not None and chunk.start in kept:
        return kept[chunk.start]
    rows = encoder.encode_rows(chunk.examples)
    if kept is not None:
        kept[chunk.start] = rows
    return rows


def encoded_rows(store: ExampleStore, encoder: Encoder) -> Iterator[Encoded]:
    """Every row of a store encoded, in row order (reusing the encodings it kept)."""
    for chunk in store.chunks():
        yield from encode_chunk(store, chunk, encoder)


def add_template_tokens(tokenizer: Any, template: Callable) -> list[str]:
    """Add a template's delimiters to the tokenizer as special tokens; returns those added."""
    wanted = [t for t in getattr(template, "special_tokens", ()) if t]
    vocab = tokenizer.get_vocab()
    new = [t for t in wanted if t not in vocab]
    if new:
        tokenizer.add_tokens(new, special_tokens=True)
    return new


def split_markers(tokenizer: Any, markers: Iterable[str], threshold: int = 2) -> dict[str, list[str]]:
    """Markers that tokenize into more than ``threshold`` pieces alone: marker -> pieces."""
    out = {}
    for marker in markers:
        marker = marker.strip()
        if not marker:
            continue
        ids = tokenizer(marker, add_special_tokens=False)["input_ids"]
        if len(ids) > threshold:
            out[marker] = tokenizer.convert_ids_to_tokens(ids)
    return out


# -- the prepared run ------------------------------------------------------------------------------

@dataclass
class Prepared:
    """One dataset ready to walk the data path: its opened data and the encoder that renders it.

    Made by ``prepare``; ``more`` opens another file (eval data, a second training source) with
    the same settings and the same encoder, so nothing is resolved or loaded twice.
    """

    data: OpenedData
    render: RenderSettings
    encoder: Encoder
    template_name: str
    masking_name: str
    registry: Registry
    added_tokens: list[str] = field(default_factory=list)
    split_markers: dict[str, list[str]] = field(default_factory=dict)
    _store: ExampleStore | None = field(default=None, repr=False)

    @property
    def spec(self) -> DatasetSpec:
        return self.data.spec

    @property
    def note(self) -> str:
        return self.data.note

    @property
    def path(self) -> str:
        return self.data.request.path

    @property
    def tokenizer(self) -> Any:
        return self.encoder.tokenizer

    @property
    def skipped(self) -> list[DataError]:
        """Broken lines left out so far (``--skip-invalid``)."""
        return self.data.skipped

    def examples(self) -> Iterator[Example]:
        """The examples, read lazily (once)."""
        return self.data.examples()

    def load(self, chunk_rows: int = CHUNK_ROWS, *, keep_encodings: bool = False) -> ExampleStore:
        """Every row in a chunked store: the first call reads the file, later calls return the same
        store (``keep_encodings``: a training run, which trains the encodings validation made)."""
        if self._store is None:
            self._store = load_store(self.data.records, self.spec, chunk_rows, keep_encodings=keep_encodings)
        return self._store

    def more(self, request: DataRequest) -> "Prepared":
        """Another file (eval data, a second training source) with the same encoder.

        Refused when its spec would render it with another template than this one: one run
        trains and evaluates one prompt format.
        """
        data = open_data(request, self.registry)
        template = self.render.template or data.spec.default_template
        if template != self.template_name:
            raise UsageError(f"{request.path} renders with template {template!r} but {self.path} with "
                             f"{self.template_name!r}; one run trains one prompt format",
                             hint="set --template for all data")
        return dataclasses.replace(self, data=data, _store=None)


def prepare(request: DataRequest, render: RenderSettings, *, tokenizer: Any = None,
            checks: Iterable[Callable[[DatasetSpec], Any]] = (), registry: Registry | None = None,
            light_tokenizer: bool = False) -> Prepared:
    """Check every component and option, open the data, and load the tokenizer once.

    The template (if named) and the masking strategy are resolved with their options before
    the file is opened; the spec's own template, and ``checks`` (a command's own checks that
    need the spec, such as its validators and their options), right after the spec is known
    and before the tokenizer loads. ``tokenizer`` overrides loading one for ``render.model``;
    ``light_tokenizer`` loads it without torch where the same ids come out (commands that only
    tokenize: see ``sftkit.models.load_tokenizer``).
    """
    registry = registry or get_registry()
    masking = render.masking or registry.default_name("masking_strategies")
    masking_fn = registry.resolve("masking_strategies", masking, dict(render.masking_options),
                                  sources=render.sources("masking_options"))
    if render.template:
        registry.resolve("templates", render.template, dict(render.template_options),
                         sources=render.sources("template_options"))
    data = open_data(request, registry)
    template = render.template or data.spec.default_template
    template_fn = registry.resolve("templates", template, dict(render.template_options),
                                   sources=render.sources("template_options"))
    for check in checks:
        check(data.spec)
    if tokenizer is None and render.model:
        from sftkit.models import load_tokenizer

        tokenizer = load_tokenizer(render.model, trust_remote_code=render.trust_remote_code, light=light_tokenizer)
    added, splits = [], {}
    if tokenizer is not None:
        if render.add_special_tokens:
            added = add_template_tokens(tokenizer, template_fn)
        splits = split_markers(tokenizer, getattr(template_fn, "special_tokens", ()))
    encoder_decoder = _encoder_decoder(render, masking, registry)
    encoder = Encoder(template_fn, masking_fn, tokenizer, render.max_length, context_for(tokenizer), encoder_decoder,
                      render.max_source_length, render.max_target_length)
    return Prepared(data, render, encoder, template, masking, registry, added, splits)


def _encoder_decoder(render: RenderSettings, masking: str, registry: Registry) -> bool:
    """Whether ``render.model`` is an encoder-decoder model; such a model refuses a masking
    strategy that declares ``encoder_decoder = False`` (one that trains prompt tokens)."""
    if not render.model:
        return False
    from sftkit.models import is_encoder_decoder

    if not is_encoder_decoder(render.model, trust_remote_code=render.trust_remote_code):
        return False
    component = registry.components("masking_strategies").get(masking)
    if component is not None and component.attribute("encoder_decoder", True) is False:
        allowed = sorted(name for name, comp in registry.components("masking_strategies").items()
                         if comp.attribute("encoder_decoder", True) is not False)
        raise UsageError(f"masking {masking!r} trains prompt tokens, but {render.model} is an encoder-decoder model: "
                         f"its prompt is the encoder input, which never trains (only the decoder's response does)",
                         hint=f"use --masking {' or '.join(allowed)}")
    return True
