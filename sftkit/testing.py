"""Testing helpers for plugin authors: pytest fixtures and one conformance check per kind.

sftkit installs this module as a pytest plugin (entry point group ``pytest11``), so in any
environment where sftkit is installed the fixtures below are available to every test without
an import:

- ``sftkit_registry``: a fresh registry holding only sftkit's built-ins, installed as the
  process-wide registry for one test (``sftkit.registry.set_registry``) and removed after it.
- ``register_plugin(plugin, name=...)``: add a plugin (a module or an object with
  ``@sftkit.hookimpl`` hooks) to that registry, exactly as an installed plugin is added.
- ``sftkit_cli(*args)``: run the ``sftkit`` command line in-process; it sees the registry above.

The checks ``check_template``, ``check_masking_strategy``, ``check_loader``,
``check_validator``, ``check_metric`` and ``check_reporter`` call a component the way sftkit
does, on small sample inputs (or yours), and raise ``ConformanceError`` (an AssertionError)
listing every contract it breaks. They return what the component produced, so a test can
assert more. sftkit's own built-ins pass the same checks in sftkit's test suite.
"""
from __future__ import annotations

import copy
import inspect
import json
import math
import numbers
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import pytest

from sftkit.errors import DataError, SftkitError
from sftkit.registry import SINGULAR, Component, PluginStatus, Registry, get_registry, set_registry
from sftkit.types import SEVERITIES, Example, Issue, Message, RenderContext, Result, Segment

__all__ = [
    "CHECKS",
    "ConformanceError",
    "as_component",
    "check_loader",
    "check_masking_strategy",
    "check_metric",
    "check_reporter",
    "check_template",
    "check_validator",
    "CliResult",
    "fresh_registry",
    "register_plugin",
    "run_cli",
    "sample_examples",
    "sample_results",
    "sftkit_cli",
    "sftkit_registry",
    "validation_context",
]

# The conformance check of each kind (the README hook reference and tests/test_docs.py use it).
CHECKS = {
    "loaders": "check_loader",
    "templates": "check_template",
    "masking_strategies": "check_masking_strategy",
    "validators": "check_validator",
    "metrics": "check_metric",
    "reporters": "check_reporter",
}
PARTS = ("marker", "content", "end")
ROLES = ("system", "user", "assistant")
NAME_PATTERN = re.compile(r"^[A-Za-z][A-Za-z0-9_.-]*$")
CODE_PATTERN = re.compile(r"^[a-z][a-z0-9_]*$")
OPTION_TYPES = (str, int, float, bool, type(None), list, tuple)
# A string that must never reach an HTML or Markdown report unescaped.
XSS = '<script>alert("sftkit")</script>'
ESCAPED_SUFFIXES = (".html", ".htm", ".md", ".markdown", ".svg")


class ConformanceError(AssertionError):
    """A component breaks the contract of its kind; the message lists every problem."""


# -- fixtures ----------------------------------------------------------------------------------

def fresh_registry(*, entry_points: bool = False) -> Registry:
    """A new registry with sftkit's built-ins (and, if asked, the installed third-party plugins)."""
    registry = Registry()
    registry.load_builtins()
    if entry_points:
        registry.load_entry_points()
    return registry


@pytest.fixture
def sftkit_registry():
    """A fresh registry of the built-ins, installed process-wide for one test, then removed."""
    import sftkit.registry as registry_module

    previous = registry_module._REGISTRY
    registry = fresh_registry()
    set_registry(registry)
    try:
        yield registry
    finally:
        set_registry(previous)


@pytest.fixture
def register_plugin(sftkit_registry):
    """``register_plugin(plugin, name="test_plugin", strict=True) -> PluginStatus`` for one test.

    The plugin is added as a third-party plugin (version ``"test"``), so its mistakes are
    recorded as they would be for an installed one; with ``strict=True`` (the default) a
    plugin that fails to register fails the test with sftkit's error message.
    """

    def register(plugin: Any, name: str = "test_plugin", *, version: str = "test", strict: bool = True) -> PluginStatus:
        status = sftkit_registry.add_plugin(plugin, name=name, version=version, builtin=False)
        if strict and not status.ok:
            raise ConformanceError(f"plugin {name} failed to register: {status.error}")
        return status

    return register


@dataclass
class CliResult:
    """What ``sftkit_cli`` returns."""

    exit_code: int
    stdout: str
    stderr: str

    def json(self) -> Any:
        """stdout parsed as JSON (for ``--json`` / ``--format json`` output)."""
        return json.loads(self.stdout)


@pytest.fixture
def sftkit_cli():
    """``sftkit_cli(*args, env=None) -> CliResult``: run the sftkit CLI in-process."""
    return run_cli


def run_cli(*args: Any, env: dict | None = None) -> CliResult:
    """Run ``sftkit ARGS`` in this process, capturing exit code, stdout and stderr."""
    from click.testing import CliRunner

    from sftkit.cli import main

    runner = CliRunner()
    with runner.isolation(env=env) as (out, err, _mixed):
        try:
            main([str(a) for a in args])
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        stdout = out.getvalue().decode("utf-8", "replace")
        stderr = err.getvalue().decode("utf-8", "replace")
    return CliResult(code, stdout, stderr)


# -- shared helpers ----------------------------------------------------------------------------

def as_component(kind: str, component: Any) -> Component:
    """A ``Component`` from a Component, a bound component, a registered name, or a bare callable."""
    if isinstance(component, Component):
        return component
    if isinstance(getattr(component, "component", None), Component):
        return component.component
    if isinstance(component, str):
        return get_registry().get(kind, component)
    from sftkit.registry import help_line

    name = getattr(component, "__name__", None) or type(component).__name__
    return Component(kind, name, component, "(under test)", "test", help_line(component))


class _Problems:
    def __init__(self, component: Component):
        self.component = component
        self.items: list[str] = []
        self.seen: dict[str, int] = {}

    def add(self, message: str) -> None:
        """Note a problem; the same problem on another row is counted, not repeated."""
        key = re.sub(r"\b(row|sample) \d+", r"\1 N", message)
        if key in self.seen:
            self.seen[key] += 1
            return
        self.seen[key] = 0
        self.items.append(message)

    def check(self) -> None:
        if self.items:
            c = self.component
            lines = "\n".join(f"  - {item}" + self._more(item) for item in self.items)
            raise ConformanceError(
                f"{SINGULAR[c.kind]} {c.name!r} (plugin {c.plugin}) breaks the {SINGULAR[c.kind]} contract "
                f"(see sftkit/hookspecs.py):\n{lines}"
            )


    def _more(self, item: str) -> str:
        more = self.seen[re.sub(r"\b(row|sample) \d+", r"\1 N", item)]
        return f" (and {more} more like it)" if more else ""


def _check_common(component: Component, problems: _Problems) -> None:
    if not NAME_PATTERN.match(component.name):
        problems.add(f"name {component.name!r} should be a word usable on the command line (letters, digits, _ . -)")
    if not component.help:
        problems.add("it has no docstring: the first line is its help text in `sftkit plugins`")
    try:
        component.check_signature()
    except SftkitError as exc:
        problems.add(str(exc))
        return
    for option, default in component.options().items():
        if default is not inspect.Parameter.empty and not isinstance(default, OPTION_TYPES):
            problems.add(f"option {option!r} defaults to a {type(default).__name__}, which cannot be set from the "
                         "command line (use str, int, float, bool, None or a list)")


def _start(kind: str, component: Any, options: dict | None) -> tuple[Component, _Problems, Callable]:
    """The component, its problem list (common checks done) and the callable bound with ``options``.

    Raises ConformanceError at once when the options cannot be bound (nothing can be called).
    """
    component = as_component(kind, component)
    problems = _Problems(component)
    _check_common(component, problems)
    try:
        bound = component.bind(options or {})
    except SftkitError as exc:
        problems.add(f"cannot be bound with options {options or {}}: {exc}")
        problems.check()
    return component, problems, bound


def _call(problems: _Problems, what: str, func: Callable, *args: Any) -> tuple[bool, Any]:
    """Call ``func``; an exception becomes a problem (with its type), not a crash of the check."""
    try:
        return True, func(*args)
    except Exception as exc:  # the point of the check: report it with the input that caused it
        exc = _unwrap(exc)
        problems.add(f"{what} raised {type(exc).__name__}: {exc}")
    return False, None


def _unwrap(exc: BaseException) -> BaseException:
    """The plugin's own exception inside the PluginError that ``call_component`` raised for it."""
    cause = exc.__cause__
    if isinstance(exc, SftkitError) and cause is not None and not isinstance(cause, SftkitError):
        return cause
    return exc


def _finite_number(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(float(value))


# -- sample inputs -----------------------------------------------------------------------------

def sample_examples() -> list[Example]:
    """Small canonical examples: with and without input, a system prompt, a conversation, odd text."""
    return [
        Example(instruction="Translate to French.", input="Good morning", output="Bonjour", row=0),
        Example(instruction="Name a primary colour.", output="Red.", row=1),
        Example(instruction="Summarise the text.", input="The meeting moved to Friday at noon.",
                output="Meeting: Friday, noon.", system="You are concise.", row=2),
        Example(messages=[Message("system", "Be brief."), Message("user", "Hi there"),
                          Message("assistant", "Hello!"), Message("user", "What is 2+2?"),
                          Message("assistant", "4")], row=3),
        Example(instruction=f"Repeat {{this}} exactly: {XSS} ### Response: 😀",
                output=f"{{this}} {XSS} 😀", row=4),
    ]


def _reference_segments(example: Example, eos: str = "</s>") -> list[Segment]:
    segments = []
    for index, message in enumerate(example.turns()):
        segments.append(Segment(f"<{message.role}>\n", message.role, "marker", index))
        segments.append(Segment(message.content, message.role, "content", index))
        if message.role == "assistant":
            segments.append(Segment(eos, "assistant", "end", index))
            segments.append(Segment("\n", "assistant", "marker", index))
    return segments


def sample_results() -> list[Result]:
    """One small Result per kind (validate, train, eval), with data strings a report must escape."""
    return [
        Result("validate", f"validate {XSS}", {
            "dataset": f"data/{XSS}.jsonl", "rows": 3, "passed": False,
            "issues": [Issue("profanity", "bad_word", "warning", f"row text {XSS}", [1], {"word": XSS}).to_dict()],
            "counts": {"error": 0, "warning": 1, "info": 0},
        }),
        Result("train", "train tiny-random", {
            "model": "tiny-random", "steps": 2, "losses": [2.5, 2.25], "note": XSS,
        }),
        Result("eval", "eval", {
            "metrics": {"exact_match": {"base": 0.25, "tuned": 0.75}},
            "examples": [{"prompt": XSS, "prediction": "yes", "reference": "yes"}],
        }),
        Result("a_kind_this_reporter_does_not_know", "unknown kind", {"text": XSS}),
    ]


# -- templates ---------------------------------------------------------------------------------

def check_template(
    template: Any,
    *,
    examples: Sequence[Example] | None = None,
    tokenizer: Any = None,
    context: RenderContext | None = None,
    options: dict | None = None,
) -> list[list[Segment]]:
    """Check a template renders examples into well-formed segments that mask correctly.

    Checked per example: a list of ``Segment`` with known roles and parts; the final response
    in an assistant ``content`` segment, followed by a non-empty ``end`` segment and nothing but
    markers after it; the prompt text present; the same output twice; the example unchanged.
    Also: declared ``markers`` appear in some rendering; ``special_tokens`` and ``jinja`` are
    strings. With a ``tokenizer``: completion-only masking trains the response's tokens, and a
    ``jinja`` chat template renders the same text and generation prompt as the template.
    Returns the segments of each example.
    """
    component, problems, bound = _start("templates", template, options)
    own_examples = examples is not None
    examples = list(examples) if own_examples else sample_examples()
    if context is None:
        from sftkit.tokenize import context_for

        context = context_for(tokenizer) if tokenizer is not None else RenderContext(eos_token="</s>", bos_token="<s>")
    rendered: list[list[Segment]] = []
    done: list[Example] = []  # the examples that rendered, aligned with ``rendered``
    for example in examples:
        before = copy.deepcopy(example)
        ok, segments = _call(problems, f"rendering row {example.row}", bound, example, context)
        if not ok:
            continue
        if not isinstance(segments, list) or not all(isinstance(s, Segment) for s in segments):
            problems.add(f"row {example.row}: returned {type(segments).__name__}, expected a list of sftkit.Segment")
            continue
        rendered.append(segments)
        done.append(example)
        _check_segments(example, segments, context, problems)
        ok, again = _call(problems, f"rendering row {example.row} a second time", bound, example, context)
        if ok and again != segments:
            problems.add(f"row {example.row}: two renderings of the same example differ (a template must be "
                         "deterministic)")
        if example != before:
            problems.add(f"row {example.row}: rendering modified the example (templates must not mutate it)")
    joined = ["".join(s.text for s in segs) for segs in rendered]
    for attr in ("markers", "special_tokens"):
        values = getattr(component.func, attr, None)
        if values is None:
            continue
        if isinstance(values, str) or not all(isinstance(v, str) and v for v in values):
            problems.add(f"attribute {attr} must be a tuple of non-empty strings, got {values!r}")
            continue
        if attr == "markers":
            for marker in values:
                if not own_examples and not any(marker in text for text in joined):
                    problems.add(f"marker {marker!r} appears in none of the renderings (markers are delimiters "
                                 "the template writes)")
    jinja = getattr(component.func, "jinja", None)
    if jinja is not None and not isinstance(jinja, str):
        problems.add(f"attribute jinja must be a string (a chat template), got {type(jinja).__name__}")
    if tokenizer is not None and rendered:
        _check_trained_tokens(done, rendered, tokenizer, problems)
        if isinstance(jinja, str):
            _check_jinja(jinja, done, rendered, tokenizer, problems)
    problems.check()
    return rendered


def _check_segments(example: Example, segments: list[Segment], context: RenderContext, problems: _Problems) -> None:
    where = f"row {example.row}"
    for index, seg in enumerate(segments):
        if not isinstance(seg.text, str):
            problems.add(f"{where}: segment {index} text is {type(seg.text).__name__}, not str")
            return
        if seg.role not in ROLES:
            problems.add(f"{where}: segment {index} has role {seg.role!r}; roles are {', '.join(ROLES)}")
        if seg.part not in PARTS:
            problems.add(f"{where}: segment {index} has part {seg.part!r}; parts are {', '.join(PARTS)}")
        if not isinstance(seg.turn, int) or seg.turn < -1:
            problems.add(f"{where}: segment {index} has turn {seg.turn!r}; turns are message indices or -1")
    responses = [i for i, s in enumerate(segments) if s.role == "assistant" and s.part == "content"]
    if not responses:
        problems.add(f"{where}: no segment has role='assistant', part='content'; masking strategies train only "
                     "those (and the end segment), so nothing would train")
        return
    last_turn = max(segments[i].turn for i in responses)
    response_text = "".join(segments[i].text for i in responses if segments[i].turn == last_turn)
    expected = example.response_text()
    if expected not in response_text:
        problems.add(f"{where}: the final response {expected!r} is not in the assistant content segments of the "
                     f"last turn ({response_text!r})")
    ends = [i for i, s in enumerate(segments) if s.role == "assistant" and s.part == "end" and s.turn == last_turn]
    if not ends:
        problems.add(f"{where}: the final assistant turn has no part='end' segment (the EOS or end-of-turn text "
                     "that teaches the model to stop)")
    else:
        end = ends[-1]
        if not segments[end].text:
            problems.add(f"{where}: the end segment is empty (use context.eos_token or the template's end-of-turn)")
        if end < max(i for i in responses if segments[i].turn == last_turn):
            problems.add(f"{where}: the end segment comes before the final response")
        trailing = [s for s in segments[end + 1:] if s.part != "marker"]
        if trailing:
            problems.add(f"{where}: content after the final end segment: {trailing[0]!r}")
    prompt_side = "".join(s.text for s in segments if not (s.role == "assistant" and s.part != "marker"))
    wanted = [m.content for m in example.turns() if m.role == "user"][-1:]
    if not example.is_conversation:
        wanted = [t for t in (example.instruction, example.input) if t]
    for text in wanted:
        if text not in prompt_side:
            problems.add(f"{where}: the prompt text {text!r} is missing from the rendering")


def _check_jinja(jinja: str, examples, rendered, tokenizer, problems: _Problems) -> None:
    """The ``jinja`` chat template saved with trained models renders what the template renders."""
    from sftkit.pipeline import generation_prompt
    from sftkit.runs import chat_messages

    saved = tokenizer.chat_template
    tokenizer.chat_template = jinja
    try:
        for example, segments in zip(examples, rendered):
            joined = "".join(s.text for s in segments)
            full = tokenizer.apply_chat_template(chat_messages(example, include_response=True), tokenize=False)
            if full != joined:
                problems.add(f"row {example.row}: the jinja chat template renders {full!r}, the template {joined!r}")
            prompt = tokenizer.apply_chat_template(chat_messages(example), tokenize=False, add_generation_prompt=True)
            if prompt != generation_prompt(segments):
                problems.add(f"row {example.row}: the jinja generation prompt {prompt!r} differs from the "
                             f"rendered prompt {generation_prompt(segments)!r}")
    except Exception as exc:  # a Jinja syntax or runtime error
        problems.add(f"the jinja chat template fails: {type(exc).__name__}: {exc}")
    finally:
        tokenizer.chat_template = saved


def _check_trained_tokens(examples, rendered, tokenizer, problems: _Problems) -> None:
    registry = get_registry()
    completion_only = registry.resolve("masking_strategies", registry.default_name("masking_strategies"))
    from sftkit.tokenize import tokenize_many

    items = [(segments, completion_only(segments)) for segments in rendered]
    for example, tokenized in zip(examples, tokenize_many(items, tokenizer)):
        trained = "".join(tokenized.text[a:b] for (a, b), label in zip(tokenized.offsets, tokenized.labels)
                          if label != -100)
        if tokenized.num_trained == 0:
            problems.add(f"row {example.row}: no token trains under the default masking strategy")
        elif example.response_text().strip() not in trained:
            problems.add(f"row {example.row}: the trained tokens {trained!r} do not cover the response")


# -- masking strategies ------------------------------------------------------------------------

def check_masking_strategy(
    strategy: Any,
    *,
    segment_lists: Sequence[list[Segment]] | None = None,
    options: dict | None = None,
) -> list[list[float]]:
    """Check a masking strategy returns one finite weight in [0, 1] per segment.

    Also: some segment trains on every sample with a response, the input list is not
    modified, the same weights come back twice, and an empty list gives no weights.
    Returns the weights for each segment list.
    """
    component, problems, bound = _start("masking_strategies", strategy, options)
    samples = list(segment_lists) if segment_lists is not None else [_reference_segments(e) for e in sample_examples()]
    results = []
    for index, segments in enumerate(list(samples) + [[]]):
        before = list(segments)
        ok, weights = _call(problems, f"sample {index} ({len(segments)} segments)", bound, segments)
        if not ok:
            continue
        if isinstance(weights, (str, bytes)) or not isinstance(weights, Sequence):
            problems.add(f"sample {index}: returned {type(weights).__name__}, expected a list of floats")
            continue
        if len(weights) != len(segments):
            problems.add(f"sample {index}: {len(weights)} weights for {len(segments)} segments (one per segment)")
            continue
        bad = [w for w in weights if not _finite_number(w) or not 0.0 <= w <= 1.0]
        if bad:
            problems.add(f"sample {index}: weights must be finite numbers in [0, 1], got {bad[0]!r}")
            continue
        if segments != before:
            problems.add(f"sample {index}: the strategy modified the segment list")
        ok, again = _call(problems, f"sample {index} a second time", bound, list(segments))
        if ok and list(again) != list(weights):
            problems.add(f"sample {index}: two calls gave different weights (a strategy must be deterministic)")
        has_response = any(s.role == "assistant" and s.part == "content" for s in segments)
        if has_response and not any(w > 0 for w in weights):
            problems.add(f"sample {index}: no segment trains although the sample has a response")
        if segments:
            results.append([float(w) for w in weights])
    problems.check()
    return results


# -- loaders -----------------------------------------------------------------------------------

def check_loader(
    loader: Any,
    path: str | Path,
    *,
    records: list[dict] | None = None,
    malformed: str | Path | None = None,
    options: dict | None = None,
) -> list[dict]:
    """Check a loader reads ``path`` into dict records (equal to ``records`` when given).

    Also: reading twice gives the same records; ``malformed`` (a broken file, if given) raises
    ``sftkit.DataError`` that names the file, and a loader with a ``skip_invalid`` option
    yields that DataError instead when the option is true; ``suffixes`` start with a dot; ``matches`` is
    callable. Returns the records.
    """
    component, problems, bound = _start("loaders", loader, options)
    path = Path(path)
    got: list = []
    ok, stream = _call(problems, f"reading {path}", bound, path)
    if ok:
        if isinstance(stream, (str, bytes, dict)) or not isinstance(stream, Iterable):
            problems.add(f"returned {type(stream).__name__}, expected an iterable of dicts (a generator is best)")
        else:
            ok, got = _call(problems, f"iterating the records of {path}", list, stream)
            got = got or []
    for index, record in enumerate(got):
        if isinstance(record, DataError) and (options or {}).get("skip_invalid"):
            continue
        if not isinstance(record, dict):
            problems.add(f"record {index} is a {type(record).__name__}, expected a dict")
            break
        if not all(isinstance(key, str) for key in record):
            problems.add(f"record {index} has a key that is not a string: {list(record)!r}")
            break
    if ok and records is not None and got != records:
        problems.add(f"read {len(got)} records that differ from the {len(records)} expected; first read: "
                     f"{got[:1]!r}, expected {records[:1]!r}")
    if ok:
        ok2, again = _call(problems, f"reading {path} a second time", lambda p: list(bound(p)), path)
        if ok2 and again != got:
            problems.add("reading the same file twice gave different records")
    if malformed is not None:
        _check_malformed(bound, Path(malformed), problems)
        if "skip_invalid" in component.options() and "skip_invalid" not in (options or {}):
            skipping = component.bind({**(options or {}), "skip_invalid": True})
            _check_skip_invalid(skipping, Path(malformed), problems)
    suffixes = getattr(component.func, "suffixes", None)
    if suffixes is not None and (isinstance(suffixes, str)
                                 or not all(isinstance(s, str) and s.startswith(".") for s in suffixes)):
        problems.add(f"attribute suffixes must be a tuple like ('.jsonl',), got {suffixes!r}")
    matches = getattr(component.func, "matches", None)
    if matches is not None and not callable(matches):
        problems.add("attribute matches must be a function matches(path) -> bool")
    problems.check()
    return got


def _check_malformed(bound: Callable, path: Path, problems: _Problems) -> None:
    try:
        list(bound(path))
    except DataError as exc:
        if path.name not in str(exc):
            problems.add(f"the DataError for the malformed {path.name} does not name the file: {exc}")
        return
    except Exception as exc:
        exc = _unwrap(exc)
        problems.add(f"reading the malformed {path.name} raised {type(exc).__name__}: {exc} (raise sftkit.DataError "
                     "with path= and line= or row=)")
        return
    problems.add(f"reading the malformed {path.name} raised no DataError")


def _check_skip_invalid(bound: Callable, path: Path, problems: _Problems) -> None:
    """With skip_invalid=True, a broken line is yielded as a DataError naming the file, not raised."""
    try:
        items = list(bound(path))
    except DataError as exc:
        if (exc.line or 0) > 1:  # a broken line after the first could have been skipped
            problems.add(f"with skip_invalid=True, reading the malformed {path.name} still raised for line "
                         f"{exc.line}: {exc.message} (yield the DataError instead of raising it)")
        return  # a whole-file problem (an unreadable header, an unparsable array) cannot be skipped
    except Exception as exc:
        exc = _unwrap(exc)
        problems.add(f"reading the malformed {path.name} with skip_invalid=True raised {type(exc).__name__}: {exc}")
        return
    errors = [item for item in items if isinstance(item, DataError)]
    if not errors:
        problems.add(f"with skip_invalid=True, reading the malformed {path.name} yielded no DataError for the "
                     "broken part (yield the DataError instead of raising it)")
    elif any(path.name not in str(error) for error in errors):
        problems.add(f"with skip_invalid=True, a yielded DataError does not name {path.name}")


# -- validators --------------------------------------------------------------------------------

def validation_context(
    examples: Sequence[Example] | None = None,
    *,
    records: Sequence[dict] | None = None,
    spec: Any = "alpaca",
    tokenizer: Any = None,
    template: str | None = None,
    masking: str | None = None,
    eval_records: Sequence[dict] | None = None,
    max_length: int | None = 1024,
) -> Any:
    """A ``ValidationContext`` as ``sftkit validate`` builds it, for calling a validator directly.

    Give raw ``records`` (mapped through ``spec``, a name or a DatasetSpec, exactly as
    validate maps them) or ready ``examples``. ``tokenizer`` enables token checks;
    ``eval_records`` the train/eval leakage checks.
    """
    from sftkit.pipeline import Encoder
    from sftkit.spec import load_spec
    from sftkit.store import ExampleStore, load_store, record_shape
    from sftkit.validation import ValidationContext

    chosen = load_spec(spec) if isinstance(spec, str) else spec
    if records is not None:
        store = load_store(list(records), chosen)
    else:
        store, shapes = ExampleStore(), {}
        for example in examples if examples is not None else sample_examples():
            fields = ({"messages": [vars(m) for m in example.messages]} if example.is_conversation else
                      {"instruction": example.instruction, "input": example.input, "output": example.output})
            store.add(example, fields, record_shape(fields, shapes))
    eval_store = load_store(list(eval_records), chosen) if eval_records is not None else None
    template = template or chosen.default_template
    masking = masking or get_registry().default_name("masking_strategies")
    encoder = Encoder.build(template=template, masking=masking, tokenizer=tokenizer, max_length=max_length)
    return ValidationContext(examples=store, spec=chosen, encoder=encoder, tokenizer=tokenizer, max_length=max_length,
                             eval_examples=eval_store, template_name=template, masking_name=masking)


def check_validator(
    validator: Any,
    context: Any = None,
    *,
    examples: Sequence[Example] | None = None,
    options: dict | None = None,
) -> list[Issue]:
    """Check a validator yields well-formed ``sftkit.Issue`` objects.

    Checked: each issue has a snake_case code, a known severity, a message, 0-based ``rows``
    within the dataset and JSON-serialisable details; the same issues come back twice; the
    examples are not modified. Pass your own ``context`` (or ``examples``) to trigger issues.
    Returns the issues.
    """
    component, problems, bound = _start("validators", validator, options)
    if context is None:
        context = validation_context(examples if examples is not None else sample_examples())
    before = copy.deepcopy(list(context.examples))
    issues = _run_validator(bound, context, problems)
    count = len(context.examples)
    for issue in issues or []:
        if not isinstance(issue, Issue):
            problems.add(f"yielded a {type(issue).__name__}, expected sftkit.Issue")
            continue
        what = f"issue {issue.code!r}"
        if issue.validator != component.name:
            problems.add(f"{what}: Issue.validator is {issue.validator!r}; it must be the validator's name "
                         f"{component.name!r} (reports group issues by it)")
        if not isinstance(issue.code, str) or not CODE_PATTERN.match(issue.code):
            problems.add(f"{what}: code must be a stable snake_case word")
        if issue.severity not in SEVERITIES:
            problems.add(f"{what}: severity {issue.severity!r} is not one of {', '.join(SEVERITIES)}")
        if not isinstance(issue.message, str) or not issue.message.strip():
            problems.add(f"{what}: message must be a non-empty string")
        if not all(isinstance(r, int) and not isinstance(r, bool) and 0 <= r < count for r in issue.rows):
            problems.add(f"{what}: rows must be 0-based indices below {count}, got {issue.rows!r}")
        try:
            json.dumps(issue.to_dict(), allow_nan=False)
        except (TypeError, ValueError) as exc:
            problems.add(f"{what}: not JSON-serialisable for reports ({exc})")
    if list(context.examples) != before:
        problems.add("the validator modified the examples")
    if issues is not None:
        again = _run_validator(bound, context, problems)
        if again is not None and [i.to_dict() for i in again if isinstance(i, Issue)] != \
                [i.to_dict() for i in issues if isinstance(i, Issue)]:
            problems.add("two runs on the same data gave different issues (a validator must be deterministic)")
    problems.check()
    return list(issues or [])


def _run_validator(bound: Callable, context: Any, problems: _Problems) -> list | None:
    ok, result = _call(problems, "validating", bound, context)
    if not ok:
        return None
    if result is None:
        return []
    if isinstance(result, (str, bytes, dict)) or not isinstance(result, Iterable):
        problems.add(f"returned {type(result).__name__}, expected an iterable of sftkit.Issue")
        return None
    ok, issues = _call(problems, "iterating the issues", list, result)
    return issues if ok else None


# -- metrics -----------------------------------------------------------------------------------

def check_metric(
    metric: Any,
    *,
    predictions: Sequence[str] | None = None,
    references: Sequence[str] | None = None,
    options: dict | None = None,
) -> dict[str, list[float]]:
    """Check a metric returns one finite score per example under each sub-metric name.

    Also: a single example works, the inputs are not modified, the same scores come back
    twice. Optional attributes: ``aggregate`` returns finite floats for known sub-metrics;
    ``resampled`` gives, for each row of resample indices (permutations here), what
    ``aggregate`` (or the mean of the per-example scores) gives on that resample; ``describe`` returns a dict of strings;
    ``input`` is "text" or "label". Returns the scores.
    """
    component, problems, bound = _start("metrics", metric, options)
    if predictions is None:
        predictions = ["positive", "The cat sat on the mat.", "", "Ünïcödé text 😀 <b>x</b>"]
        references = ["positive", "A cat was sitting on the mat.", "negative", "Ünïcödé text 😀"]
    predictions, references = list(predictions), list(references or [])
    scores = None
    for preds, refs, what in ((predictions, references, "the samples"), (predictions[:1], references[:1], "one example")):
        saved = (list(preds), list(refs))
        ok, result = _call(problems, f"scoring {what}", bound, preds, refs)
        if not ok:
            continue
        if (preds, refs) != saved:
            problems.add("the metric modified its inputs")
        if not isinstance(result, dict) or not result:
            problems.add(f"scoring {what} returned {type(result).__name__}, expected a non-empty "
                         "dict {sub_metric: [score per example]}")
            continue
        for key, values in result.items():
            if not isinstance(key, str):
                problems.add(f"sub-metric name {key!r} is not a string")
            if isinstance(values, (str, bytes)) or not isinstance(values, Sequence) or len(values) != len(preds):
                problems.add(f"{key}: expected a list of {len(preds)} scores (one per example), got {values!r:.80}")
            elif not all(_finite_number(v) for v in values):
                problems.add(f"{key}: scores must be finite numbers, got {list(values)!r:.80}")
        if scores is None:
            scores = result
            ok, again = _call(problems, "scoring the samples a second time", bound, list(preds), list(refs))
            if ok and again != result:
                problems.add("two calls on the same inputs gave different scores (a metric must be deterministic)")
    coerced = dict(getattr(bound, "options", {}))
    aggregate = getattr(component.func, "aggregate", None)
    if aggregate is not None:
        ok, totals = _call(problems, "aggregate", lambda p, r: aggregate(p, r, **coerced), predictions, references)
        if ok:
            if not isinstance(totals, dict) or not all(_finite_number(v) for v in totals.values()):
                problems.add(f"aggregate must return a dict of finite floats, got {totals!r:.80}")
                aggregate = None
            elif scores is not None and not set(totals) <= set(scores):
                problems.add(f"aggregate keys {sorted(totals)} are not among the per-example keys {sorted(scores)}")
    resampled = getattr(component.func, "resampled", None)
    if resampled is not None and scores is not None:
        _check_resampled(resampled, aggregate, bound, coerced, predictions, references, problems)
    describe = getattr(component.func, "describe", None)
    if describe is not None:
        ok, info = _call(problems, "describe", lambda: describe(**coerced))
        if ok and not (isinstance(info, dict) and all(isinstance(k, str) and isinstance(v, str)
                                                      for k, v in info.items())):
            problems.add(f"describe must return a dict of strings (settings for the report), got {info!r:.80}")
    if getattr(component.func, "input", "text") not in ("text", "label"):
        problems.add(f"attribute input must be 'text' or 'label', got {component.func.input!r}")
    problems.check()
    return scores or {}


def _check_resampled(resampled, aggregate, bound, options, predictions, references, problems: _Problems) -> None:
    """``resampled`` (the fast bootstrap path) must equal the slow path on each resample.

    The resamples are permutations of the rows: a metric may fix settings derived from the
    whole data (F1's label set) for every resample, so a resample that leaves rows out may
    legitimately differ from scoring it alone.
    """
    import numpy as np

    n = len(predictions)
    indices = np.array([list(range(n)), list(reversed(range(n))), [(i + 1) % n for i in range(n)]])
    ok, reps = _call(problems, "resampled", lambda: resampled(predictions, references, indices, **options))
    if not ok:
        return
    if not isinstance(reps, dict):
        problems.add(f"resampled must return a dict {{sub_metric: one value per resample}}, got {type(reps).__name__}")
        return
    for key, values in reps.items():
        values = np.asarray(values, dtype=float)
        if values.shape != (len(indices),):
            problems.add(f"resampled[{key!r}] has shape {values.shape}, expected ({len(indices)},): one per resample")
            continue
        for r, rows in enumerate(indices):
            preds, refs = [predictions[i] for i in rows], [references[i] for i in rows]
            if aggregate is not None and key in (totals := aggregate(preds, refs, **options)):
                expected = float(totals[key])
            else:
                expected = float(np.mean(bound(preds, refs)[key]))
            if not math.isclose(values[r], expected, rel_tol=1e-6, abs_tol=1e-9):
                problems.add(f"resampled[{key!r}] is {float(values[r])!r} on resample {[int(i) for i in rows]}, "
                             f"but scoring that resample directly gives {expected!r}")
                break


# -- reporters ---------------------------------------------------------------------------------

def check_reporter(
    reporter: Any,
    output_dir: str | Path,
    *,
    results: Sequence[Result] | None = None,
    options: dict | None = None,
) -> dict[str, Path | None]:
    """Check a reporter writes each result kind (or declines one it does not handle with None).

    Checked: the return value is None or an existing, non-empty file inside ``output_dir``; no
    temporary file is left behind; HTML and Markdown output escapes a ``<script>`` string that
    came from the data. Returns ``{result kind: path or None}``.
    """
    component, problems, bound = _start("reporters", reporter, options)
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    written: dict[str, Path | None] = {}
    for result in results if results is not None else sample_results():
        ok, path = _call(problems, f"reporting a {result.kind!r} result", bound, result, output_dir)
        if not ok:
            continue
        if path is None:
            written[result.kind] = None
            continue
        if not isinstance(path, (str, Path)):
            problems.add(f"{result.kind}: returned {type(path).__name__}, expected the path written or None")
            continue
        path = Path(path)
        written[result.kind] = path
        if not path.is_file() or path.stat().st_size == 0:
            problems.add(f"{result.kind}: returned {path}, which is not a non-empty file")
            continue
        if output_dir.resolve() not in path.resolve().parents:
            problems.add(f"{result.kind}: wrote {path} outside the output folder {output_dir}")
        if path.suffix.lower() in ESCAPED_SUFFIXES and XSS in path.read_text("utf-8", "replace"):
            problems.add(f"{result.kind}: {path.name} contains an unescaped <script> string from the data "
                         "(escape every string that came from data, e.g. with html.escape)")
    leftovers = [p.name for p in output_dir.rglob("*") if p.name.endswith(".tmp")]
    if leftovers:
        problems.add(f"temporary files left behind: {leftovers} (write with sftkit.io.atomic_write_text)")
    problems.check()
    return written
