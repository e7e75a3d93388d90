"""The data path in one place: load, map to the spec, render, mask, tokenize.

    spec, note, examples = open_dataset(path, spec="alpaca")
    encoder = Encoder.build(template="alpaca", masking="completion_only", tokenizer=tok)
    tokenized = encoder.encode(next(examples))

validate, train, eval and preview all go through these two functions, so what a user
previews is exactly what trains.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from itertools import chain
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

from sftkit.errors import DataError, UsageError
from sftkit.registry import Registry, get_registry
from sftkit.spec import DatasetSpec, examples_from_records, load_spec, resolve_spec
from sftkit.tokenize import context_for, mask, render, tokenize_many
from sftkit.types import Example, RenderContext, Segment, TokenizedExample


def choose_loader(path: Path, name: str | None = None, options: dict | None = None,
                  registry: Registry | None = None) -> Callable:
    """The loader named ``name``, or the one whose suffixes or ``matches`` fit the path."""
    registry = registry or get_registry()
    if name:
        return registry.resolve("loaders", name, options)
    loaders = registry.components("loaders")
    for comp in loaders.values():
        matches = getattr(comp.func, "matches", None)
        if matches is not None and matches(path):
            return comp.bind(options)
    suffix = path.suffix.lower()
    for comp in loaders.values():
        if suffix in tuple(getattr(comp.func, "suffixes", ())):
            return comp.bind(options)
    raise UsageError(f"no loader for {path} (suffix {suffix or 'none'})",
                     hint="choose one with --loader NAME; loaders: " + ", ".join(sorted(loaders)))


def load_records(path: str | Path, loader: str | None = None, loader_options: dict | None = None,
                 registry: Registry | None = None, *, skip_invalid: bool = False,
                 skipped: list[DataError] | None = None) -> Iterator[dict]:
    """Records from a file or folder, through the chosen loader (lazily).

    With ``skip_invalid``, a loader that supports it (an option ``skip_invalid``) yields a
    DataError for each broken line instead of raising; those are appended to ``skipped``
    (as the iteration reaches them) and left out of the records.
    """
    path = Path(path)
    if not path.exists():
        raise DataError("no such file or folder", path=str(path))
    read = choose_loader(path, loader, loader_options, registry)
    component = getattr(read, "component", None)
    if skip_invalid and component is not None and "skip_invalid" in component.options():
        items = read(path, skip_invalid=True)
    else:
        items = read(path)
    return _records_only(iter(items), skipped if skipped is not None else [], skip_invalid)


def _records_only(items: Iterator, skipped: list[DataError], skip_invalid: bool) -> Iterator[dict]:
    for item in items:
        if isinstance(item, DataError):
            if not skip_invalid:
                raise item
            skipped.append(item)
            continue
        yield item


def open_dataset(
    path: str | Path,
    *,
    spec: str | None = None,
    columns: Iterable[str] = (),
    instruction: str | None = None,
    loader: str | None = None,
    loader_options: dict | None = None,
    registry: Registry | None = None,
    skip_invalid: bool = False,
    skipped: list[DataError] | None = None,
) -> tuple[DatasetSpec, str, Iterator[Example]]:
    """Open a dataset: the resolved spec, a note on how it was chosen, and lazy Examples.

    A named spec may carry ``loader`` and ``loader_options`` for its data; options given
    here win over the spec's. With ``skip_invalid``, broken lines are left out and their
    errors appended to ``skipped`` as the examples are read.
    """
    chosen, note, records = open_records(path, spec=spec, columns=columns, instruction=instruction, loader=loader,
                                         loader_options=loader_options, registry=registry,
                                         skip_invalid=skip_invalid, skipped=skipped)
    return chosen, note, examples_from_records(records, chosen)


def open_records(
    path: str | Path,
    *,
    spec: str | None = None,
    columns: Iterable[str] = (),
    instruction: str | None = None,
    loader: str | None = None,
    loader_options: dict | None = None,
    registry: Registry | None = None,
    skip_invalid: bool = False,
    skipped: list[DataError] | None = None,
) -> tuple[DatasetSpec, str, Iterator[dict]]:
    """Like ``open_dataset`` but yields the raw records (validate also needs their shape)."""
    named = load_spec(spec) if spec else None
    if named is not None:
        loader = loader or named.loader
        loader_options = {**named.loader_options, **(loader_options or {})}
    records = load_records(path, loader, loader_options, registry, skip_invalid=skip_invalid, skipped=skipped)
    try:
        first = next(records)
    except StopIteration:
        raise DataError("the dataset has no records", path=str(path), hint="check the file is not empty") from None
    chosen, note = resolve_spec(spec, first, columns, instruction)
    return chosen, note, chain([first], records)


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
class Encoder:
    """A template, a masking strategy and a tokenizer: Example -> segments -> tokens."""

    template: Callable
    masking: Callable
    tokenizer: Any = None
    max_length: int | None = None
    context: RenderContext = field(default_factory=RenderContext)

    @classmethod
    def build(cls, *, template: str, masking: str = "completion_only", tokenizer: Any = None,
              max_length: int | None = None, template_options: dict | None = None,
              masking_options: dict | None = None, registry: Registry | None = None) -> "Encoder":
        """Resolve a template and a masking strategy by name (options checked before any work)."""
        registry = registry or get_registry()
        return cls(
            template=registry.resolve("templates", template, template_options),
            masking=registry.resolve("masking_strategies", masking, masking_options),
            tokenizer=tokenizer,
            max_length=max_length,
            context=context_for(tokenizer),
        )

    def segments(self, example: Example) -> list[Segment]:
        """Render one example."""
        return render(example, self.template, self.context)

    def weights(self, segments: list[Segment]) -> list[float]:
        """Loss weight per segment."""
        return mask(segments, self.masking)

    def encode_many(self, examples: Iterable[Example]) -> list[TokenizedExample]:
        """Render, mask and tokenize many examples (one tokenizer call)."""
        if self.tokenizer is None:
            raise UsageError("tokenizing needs a tokenizer", hint="pass --model")
        items = []
        for example in examples:
            segments = self.segments(example)
            items.append((segments, self.weights(segments)))
        return tokenize_many(items, self.tokenizer, self.max_length)

    def encode(self, example: Example) -> TokenizedExample:
        """Render, mask and tokenize one example."""
        return self.encode_many([example])[0]

    def prompt(self, example: Example) -> str:
        """The prompt exactly as rendered in training, minus the response."""
        return generation_prompt(self.segments(example))


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


@dataclass
class Prepared:
    """Everything a command needs to walk the data path for one dataset."""

    spec: DatasetSpec
    note: str
    examples: Iterator[Example]
    encoder: Encoder
    tokenizer: Any
    template_name: str
    masking_name: str
    added_tokens: list[str] = field(default_factory=list)
    split_markers: dict[str, list[str]] = field(default_factory=dict)
    skipped: list[DataError] = field(default_factory=list)  # broken lines left out (--skip-invalid)


def prepare(
    path: str | Path,
    *,
    spec: str | None = None,
    columns: Iterable[str] = (),
    instruction: str | None = None,
    loader: str | None = None,
    loader_options: dict | None = None,
    template: str | None = None,
    template_options: dict | None = None,
    masking: str = "completion_only",
    masking_options: dict | None = None,
    model: str | None = "smollm2-135m",
    max_length: int | None = None,
    add_special_tokens: bool = False,
    trust_remote_code: bool = False,
    skip_invalid: bool = False,
    registry: Registry | None = None,
) -> Prepared:
    """Resolve components (rejecting unknown options first), open the data, load the tokenizer."""
    registry = registry or get_registry()
    check_components(template, template_options, masking, masking_options, registry)
    skipped: list[DataError] = []
    chosen, note, examples = open_dataset(path, spec=spec, columns=columns, instruction=instruction,
                                          loader=loader, loader_options=loader_options, registry=registry,
                                          skip_invalid=skip_invalid, skipped=skipped)
    encoder, added = build_encoder(chosen, template=template, template_options=template_options, masking=masking,
                                   masking_options=masking_options, model=model, max_length=max_length,
                                   add_special_tokens=add_special_tokens, trust_remote_code=trust_remote_code,
                                   registry=registry)
    tokenizer = encoder.tokenizer
    splits = split_markers(tokenizer, getattr(encoder.template, "special_tokens", ())) if tokenizer is not None else {}
    return Prepared(chosen, note, examples, encoder, tokenizer, template or chosen.default_template, masking,
                    added, splits, skipped)


def check_components(template: str | None, template_options: dict | None, masking: str,
                     masking_options: dict | None, registry: Registry) -> None:
    """Reject an unknown template or masking strategy, or an unknown option, before any work."""
    registry.resolve("masking_strategies", masking, masking_options)
    if template:
        registry.resolve("templates", template, template_options)


def build_encoder(spec: DatasetSpec, *, template: str | None, template_options: dict | None, masking: str,
                  masking_options: dict | None, model: str | None = None, tokenizer: Any = None,
                  max_length: int | None = None, add_special_tokens: bool = False,
                  trust_remote_code: bool = False, registry: Registry | None = None) -> tuple[Encoder, list[str]]:
    """The Encoder for a dataset: its template (or the spec's), the masking strategy, and the
    tokenizer (``tokenizer`` as given, else loaded for ``model``; none if neither). Returns the
    encoder and the delimiters added as special tokens (with ``add_special_tokens``)."""
    if tokenizer is None and model:
        from sftkit.models import load_tokenizer

        tokenizer = load_tokenizer(model, trust_remote_code=trust_remote_code)
    encoder = Encoder.build(template=template or spec.default_template, masking=masking, tokenizer=tokenizer,
                            max_length=max_length, template_options=template_options,
                            masking_options=masking_options, registry=registry)
    added: list[str] = []
    if tokenizer is not None and add_special_tokens:
        added = add_template_tokens(tokenizer, encoder.template)
        encoder.context = context_for(tokenizer)
    return encoder, added
