"""Dataset specs: how a source's columns map onto sftkit's canonical example.

A spec is YAML (see ``datasets_spec/``)::

    name: financial_phrasebank
    format: alpaca            # alpaca | instruction_response | prompt_completion | messages | sharegpt | text
    columns: {input: content, output: label}   # canonical field -> source column (dotted paths allowed)
    instruction: "Classify the sentiment ..."   # a constant instruction for data that has none
    task: classification      # generation | classification | summarization | qa
    labels: [positive, negative, neutral]
    template: alpaca          # the template to use when none is given
    constraints: {output: {min_length: 1}}      # per-field checks the schema validator enforces
    validators: {quality: {min_output_chars: 2}}  # validator options (thresholds)
    severity: {conflicting_labels: warning}       # change an issue code's severity (or "off")
    loader_options: {encoding_errors: replace}    # options for the loader of this data
"""
from __future__ import annotations

import copy
import json
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping

from sftkit.errors import DataError, UsageError
from sftkit.types import Example, Message

FORMATS = ("alpaca", "instruction_response", "prompt_completion", "messages", "sharegpt", "text")
TASKS = ("generation", "classification", "summarization", "qa")
CANONICAL_FIELDS = ("instruction", "input", "output", "system", "messages", "label", "task")

# Canonical field -> default source column, per format.
DEFAULT_COLUMNS: dict[str, dict[str, str]] = {
    "alpaca": {"instruction": "instruction", "input": "input", "output": "output"},
    "instruction_response": {"instruction": "instruction", "output": "response"},
    "prompt_completion": {"instruction": "prompt", "output": "completion"},
    "messages": {"messages": "messages"},
    "sharegpt": {"messages": "conversations"},
    "text": {"output": "text"},
}
# Fields a record of each format must have (the rest are optional).
REQUIRED_FIELDS = {
    "alpaca": ("instruction", "output"),
    "instruction_response": ("instruction", "output"),
    "prompt_completion": ("instruction", "output"),
    "messages": ("messages",),
    "sharegpt": ("messages",),
    "text": ("output",),
}
SHAREGPT_ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant",
                  "model": "assistant", "bot": "assistant", "chatgpt": "assistant", "system": "system"}
SPEC_KEYS = ("name", "description", "format", "columns", "instruction", "system", "task", "labels",
             "template", "constraints", "validators", "severity", "loader", "loader_options", "source")
SEVERITY_LEVELS = ("error", "warning", "info", "off")


@dataclass
class DatasetSpec:
    """A parsed dataset spec."""

    name: str
    format: str
    columns: dict[str, str]
    instruction: str | None = None
    system: str | None = None
    task: str = "generation"
    labels: list[str] = field(default_factory=list)
    template: str | None = None
    constraints: dict[str, dict[str, Any]] = field(default_factory=dict)
    validators: dict[str, dict[str, Any]] = field(default_factory=dict)
    severity: dict[str, str] = field(default_factory=dict)  # issue code -> error | warning | info | off
    description: str = ""
    loader: str | None = None
    loader_options: dict[str, Any] = field(default_factory=dict)
    source: str = ""

    @property
    def required_fields(self) -> tuple[str, ...]:
        required = tuple(f for f in REQUIRED_FIELDS[self.format] if not (f == "instruction" and self.instruction is not None))
        return required

    @property
    def default_template(self) -> str:
        """The spec's template, else the template of the built-in spec of its format."""
        return self.template or format_template(self.format)

    def to_dict(self) -> dict[str, Any]:
        """The spec as YAML-ready data; ``spec_from_dict(spec.to_dict())`` gives the same spec.

        A default column the spec removed (``instruction: null`` for data with a constant
        instruction) is written as None, so reading it back does not restore the default.
        """
        out = {k: getattr(self, k) for k in SPEC_KEYS if getattr(self, k, None) not in (None, "", [], {})}
        columns = dict(self.columns)
        for canonical in DEFAULT_COLUMNS[self.format]:
            if canonical not in columns:
                columns[canonical] = None
        out["columns"] = columns
        return out

    # -- mapping ----------------------------------------------------------------------------
    def map_record(self, record: dict) -> dict[str, Any]:
        """The canonical fields of one record, with their raw values (missing ones absent)."""
        mapped: dict[str, Any] = {}
        for canonical, column in self.columns.items():
            found, value = lookup(record, column)
            if found:
                mapped[canonical] = value
        if self.instruction is not None and "instruction" not in self.columns:
            mapped["instruction"] = self.instruction
        if self.system is not None and "system" not in mapped:
            mapped["system"] = self.system
        return mapped

    def to_example(self, record: dict, row: int) -> Example:
        """Map one record to an Example. Problems (missing fields, wrong types, bad roles) are
        noted in ``example.meta["problems"]`` for the validators, never raised here."""
        mapped = self.map_record(record)
        problems: list[tuple[str, str, str]] = []
        for name in self.required_fields:
            if name not in mapped or mapped[name] is None:
                problems.append(("missing_field", name, f"no value for {name!r} (column {self.columns.get(name, name)!r})"))

        def text(name: str) -> str:
            value = mapped.get(name)
            if value is None:
                return ""
            if isinstance(value, str):
                return value
            if isinstance(value, float) and value != value:  # NaN from a CSV or Parquet cell
                problems.append(("wrong_type", name, f"{name!r} is NaN"))
                return ""
            if isinstance(value, (int, float, bool)):
                if name not in ("output", "label") or self.task != "classification":
                    problems.append(("wrong_type", name, f"{name!r} is a {type(value).__name__}, expected text"))
                return str(value)
            problems.append(("wrong_type", name, f"{name!r} is a {type(value).__name__}, expected text"))
            return json.dumps(value, ensure_ascii=False, default=str)

        example = Example(row=row, task=self.task)
        if self.format in ("messages", "sharegpt"):
            example.messages = self._messages(mapped.get("messages"), problems)
            example.system = text("system")
            if example.system and not any(m.role == "system" for m in example.messages):
                example.messages.insert(0, Message("system", example.system))
            example.output = example.response_text()
            users = [m.content for m in example.messages if m.role == "user"]
            example.instruction = users[-1] if users else ""
        else:
            example.instruction = text("instruction")
            example.input = text("input")
            example.output = text("output")
            example.system = text("system")
        if "label" in mapped:
            example.label = text("label")
        elif self.task == "classification":
            example.label = example.output
        if "task" in mapped and mapped["task"] is not None:
            example.meta["category"] = text("task")
        if problems:
            example.meta["problems"] = problems
        return example

    def _messages(self, value: Any, problems: list) -> list[Message]:
        if value is None:
            return []
        if not isinstance(value, list):
            problems.append(("wrong_type", "messages", f"messages is a {type(value).__name__}, expected a list"))
            return []
        if not value:
            problems.append(("missing_field", "messages", "the conversation has no turns"))
        messages = []
        for index, turn in enumerate(value):
            if not isinstance(turn, dict):
                problems.append(("wrong_type", "messages", f"turn {index} is a {type(turn).__name__}, expected an object"))
                continue
            if self.format == "sharegpt":
                raw_role, content = turn.get("from"), turn.get("value")
                role = SHAREGPT_ROLES.get(str(raw_role).lower()) if raw_role is not None else None
            else:
                raw_role, content = turn.get("role"), turn.get("content")
                role = raw_role if raw_role in ("system", "user", "assistant") else None
            if role is None:
                problems.append(("unknown_role", "messages", f"turn {index} has unknown role {raw_role!r}"))
                role = "user"
            if content is None:
                problems.append(("missing_field", "messages", f"turn {index} has no content"))
                content = ""
            elif not isinstance(content, str):
                problems.append(("wrong_type", "messages", f"turn {index} content is a {type(content).__name__}"))
                content = json.dumps(content, ensure_ascii=False, default=str)
            messages.append(Message(role, content))
        _check_alternation(messages, problems)
        return messages


def _check_alternation(messages: list[Message], problems: list) -> None:
    """Note the first turn that breaks system*, user, assistant, user, assistant, ..."""
    expected, started = "user", False
    for index, message in enumerate(messages):
        if message.role == "system" and not started:
            continue
        started = True
        if message.role != expected:
            problems.append(("non_alternating", "messages",
                             f"turn {index} is {message.role}, expected {expected} (system first, then user and "
                             f"assistant in turn)"))
            return
        expected = "assistant" if expected == "user" else "user"


def lookup(record: dict, path: str) -> tuple[bool, Any]:
    """Find a dotted column path (``instances.0.output``) in a record."""
    if path in record:
        return True, record[path]
    value: Any = record
    for part in path.split("."):
        if isinstance(value, dict) and part in value:
            value = value[part]
        elif isinstance(value, list) and part.isdigit() and int(part) < len(value):
            value = value[int(part)]
        else:
            return False, None
    return True, value


# -- loading specs ----------------------------------------------------------------------------

def builtin_spec_names() -> list[str]:
    """Names of the specs shipped in ``sftkit.datasets_spec``."""
    folder = resources.files("sftkit.datasets_spec")
    return sorted(p.name[:-5] for p in folder.iterdir() if p.name.endswith(".yaml"))


MAX_SPEC_BYTES = 16 * 2**20  # a spec is a page of YAML: anything larger is not one
MAX_YAML_DEPTH = 100  # nesting levels of a spec or recipe (real ones use 3)


def format_template(fmt: str) -> str:
    """The template of the built-in spec named after a format (``messages`` -> ``chatml``)."""
    text = resources.files("sftkit.datasets_spec").joinpath(f"{fmt}.yaml").read_text("utf-8")
    template = safe_yaml(text, f"built-in:{fmt}").get("template")
    if not isinstance(template, str):
        raise AssertionError(f"the built-in spec {fmt}.yaml names no template")  # pragma: no cover
    return template


def load_spec(name_or_path: str | DatasetSpec) -> DatasetSpec:
    """A spec by built-in name (``alpaca``), from a YAML file path, or a copy of a given spec."""
    from sftkit.io import check_readable, describe_file

    if isinstance(name_or_path, DatasetSpec):
        return copy.deepcopy(name_or_path)
    path = Path(name_or_path)
    names = builtin_spec_names()
    if path.suffix in (".yaml", ".yml"):
        if not path.exists():
            raise UsageError(f"spec file {name_or_path} does not exist")
        if not path.is_file():  # a folder, a FIFO (it would hang), a device (/dev/zero never ends)
            raise UsageError(f"spec file {name_or_path} does not exist as a regular file: it is "
                             f"{describe_file(path)}", hint="give the path of a YAML spec file")
        check_readable(path, what="spec")
        text = read_yaml_text(path)
        source = str(path)
    else:
        if name_or_path not in names:
            # Only .yaml/.yml files are read as specs: any other path is refused unread.
            raise UsageError(f"unknown spec {name_or_path!r}; built-in specs: {', '.join(names)}",
                             hint="or pass the path of a YAML spec (ending in .yaml or .yml)")
        text = resources.files("sftkit.datasets_spec").joinpath(f"{name_or_path}.yaml").read_text("utf-8")
        source = f"built-in:{name_or_path}"
    return spec_from_dict(safe_yaml(text, source), source)


def read_yaml_text(path: Path) -> str:
    """The text of a spec or recipe file: a regular file of at most ``MAX_SPEC_BYTES``, strict
    UTF-8 (a BOM is accepted); a bad byte is a DataError naming the file and the line."""
    from sftkit.io import read_bounded

    data = read_bounded(path, MAX_SPEC_BYTES, hint="a spec or recipe is a short YAML file: is this the right file?")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise DataError(f"invalid UTF-8 at byte {exc.start}", path=str(path),
                        line=data.count(b"\n", 0, exc.start) + 1, hint="re-save the file as UTF-8") from None


def safe_yaml(text: str, source: str) -> Any:
    """Parse YAML with the safe loader; aliases are refused (no billion-laughs expansion), and so
    is nesting deeper than ``MAX_YAML_DEPTH``. Every parse problem is one DataError naming
    ``source`` (and the line where known)."""
    import yaml

    class NoAliasLoader(yaml.SafeLoader):
        depth = 0

        def compose_node(self, parent, index):  # type: ignore[override]
            if self.check_event(yaml.events.AliasEvent):
                event = self.peek_event()
                raise DataError("YAML aliases (*name) are not allowed", path=source,
                                line=event.start_mark.line + 1, hint="write the value out in full")
            self.depth += 1
            try:
                if self.depth > MAX_YAML_DEPTH:
                    event = self.peek_event()
                    raise DataError(f"YAML nested deeper than {MAX_YAML_DEPTH} levels", path=source,
                                    line=event.start_mark.line + 1, hint="a spec or recipe needs a few levels at most")
                return super().compose_node(parent, index)
            finally:
                self.depth -= 1

    try:
        return yaml.load(text, Loader=NoAliasLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.reader.ReaderError as exc:  # a control character or invalid text, by character position
        char = exc.character if isinstance(exc.character, int) else ord(exc.character)
        raise DataError(f"invalid YAML: unacceptable character #x{char:04x}: {exc.reason}", path=source,
                        line=text.count("\n", 0, max(exc.position, 0)) + 1, hint="remove the control character (write it as an escape in a double-quoted string)") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        raise DataError(f"invalid YAML: {getattr(exc, 'problem', None) or exc}", path=source,
                        line=mark.line + 1 if mark else None) from None
    except RecursionError:
        raise DataError("YAML nested too deeply", path=source) from None
    except (ValueError, TypeError, OverflowError) as exc:  # e.g. a date such as 2024-13-01
        raise DataError(f"invalid YAML value: {exc}", path=source,
                        hint="quote a value that only looks like a date or number ('2024-13-01')") from None


# -- checking a parsed spec -------------------------------------------------------------------

SCALARS = (str, int, float, bool)
QUOTE_HINT = "YAML reads unquoted yes/no/on/off/true/false as booleans: write the value in quotes ('yes')"


def _shape(value: Any) -> str:
    """How a YAML value reads in words: a mapping, a list, a number, a boolean, ..."""
    if value is None:
        return "empty (null)"
    if isinstance(value, bool):
        return f"a boolean ({str(value).lower()})"
    if isinstance(value, (int, float)):
        return f"a number ({value!r})"
    if isinstance(value, str):
        return f"the text {value!r}"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    return f"a {type(value).__name__} ({value})"


class _Checker:
    """Shape checks of one spec's values, each error naming the spec file and the key."""

    def __init__(self, source: str):
        self.source = source

    def fail(self, key: str, message: str, hint: str | None = None) -> DataError:
        return DataError(message, path=self.source, field=key, hint=hint)

    def text(self, data: dict, key: str, *, optional: bool = True, scalar_ok: bool = False) -> str | None:
        value = data.get(key)
        if value is None and optional:
            return None
        if isinstance(value, str):
            return value
        if scalar_ok and isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)
        raise self.fail(key, f"{key} must be text, got {_shape(value)}",
                        QUOTE_HINT if isinstance(value, bool) else f"write {key}: \"...\"")

    def choice(self, data: dict, key: str, choices: tuple, default: str) -> str:
        value = data.get(key, default)
        if value is None:
            value = default
        if not isinstance(value, str):
            raise self.fail(key, f"{key} must be one of {', '.join(choices)}, got {_shape(value)}")
        if value not in choices:
            raise self.fail(key, f"unknown {key} {value!r}", f"{key}s: " + ", ".join(choices))
        return value

    def mapping(self, data: dict, key: str) -> dict:
        value = data.get(key)
        if value is None:
            return {}
        if not isinstance(value, dict):
            raise self.fail(key, f"{key} must be a mapping (key: value lines), got {_shape(value)}")
        for name in value:
            if not isinstance(name, str):
                raise self.fail(key, f"{key}: the key {name!r} must be text, got {_shape(name)}",
                                QUOTE_HINT if isinstance(name, bool) or name is None else None)
        return value

    def options(self, data: dict, key: str, nested: bool) -> dict:
        """``loader_options`` (``nested=False``: name -> value) or ``validators``/``constraints``
        (``nested=True``: name -> {option: value}); values are scalars or lists of scalars."""
        value = self.mapping(data, key)
        groups = value.items() if nested else [(None, value)]
        for group, options in groups:
            where = f"{key}.{group}" if group is not None else key
            if nested:
                if options is None:
                    continue
                if not isinstance(options, dict):
                    raise self.fail(key, f"{where} must be a mapping of options to values, got {_shape(options)}",
                                    f"e.g. {key}: {{{group}: {{option: value}}}}")
            for option, setting in options.items():
                if not isinstance(option, str):
                    raise self.fail(key, f"{where}: the option {option!r} must be text, got {_shape(option)}")
                ok = setting is None or isinstance(setting, SCALARS) or (
                    isinstance(setting, list) and all(isinstance(x, SCALARS) for x in setting))
                if not ok:
                    raise self.fail(key, f"{where}.{option} must be a single value (text, a number, true/false) "
                                         f"or a list of them, got {_shape(setting)}")
        return {k: (dict(v) if isinstance(v, dict) else {}) for k, v in value.items()} if nested else dict(value)


def spec_from_dict(data: Any, source: str = "<spec>") -> DatasetSpec:
    """Build and check a DatasetSpec from parsed YAML.

    Every key's value is checked for its shape (text, a mapping, a list of labels, ...); a
    wrong one is one DataError naming the spec file and the key.
    """
    import difflib

    check = _Checker(source)
    if not isinstance(data, dict):
        raise DataError(f"a spec must be a mapping of keys to values, got {_shape(data)}", path=source)
    for key in data:
        if key not in SPEC_KEYS:
            close = difflib.get_close_matches(str(key), SPEC_KEYS, n=1)
            raise DataError(f"unknown spec key {key!r}", path=source,
                            hint=f"did you mean {close[0]!r}?" if close else "keys: " + ", ".join(SPEC_KEYS))
    fmt = check.choice(data, "format", FORMATS, "alpaca")
    columns = dict(DEFAULT_COLUMNS[fmt])
    given = data.get("columns")
    if given is not None and not isinstance(given, dict):
        raise check.fail("columns", f"columns must map canonical fields to source columns, got {_shape(given)}",
                         "e.g. columns: {input: content, output: label}")
    for canonical, column in (given or {}).items():
        if canonical not in CANONICAL_FIELDS:
            raise DataError(f"unknown canonical field {canonical!r}", path=source, field="columns",
                            hint="fields: " + ", ".join(CANONICAL_FIELDS))
        if column is None:
            columns.pop(canonical, None)
        elif isinstance(column, str) or (isinstance(column, int) and not isinstance(column, bool)):
            columns[canonical] = str(column)
        else:
            raise check.fail("columns", f"columns.{canonical} must name one source column (text), got "
                                        f"{_shape(column)}", QUOTE_HINT if isinstance(column, bool) else None)
    task = check.choice(data, "task", TASKS, "generation")
    labels = data.get("labels")
    if labels is None:
        labels = []
    if not isinstance(labels, list):
        raise check.fail("labels", f"labels must be a list of strings, got {_shape(labels)}",
                         "e.g. labels: [positive, negative, neutral]")
    for label in labels:
        if isinstance(label, bool):
            raise check.fail("labels", f"labels must be a list of strings, but one is the boolean {str(label).lower()} "
                                       f"(YAML reads an unquoted yes, no, on, off, true or false as one)",
                             "write such labels in quotes: labels: ['yes', 'no']")
        if not isinstance(label, (str, int, float)):
            raise check.fail("labels", f"labels must be a list of strings, got {_shape(label)} in the list")
    constraints = check.options(data, "constraints", nested=True)
    for name, rules in constraints.items():
        if name not in CANONICAL_FIELDS:
            raise check.fail("constraints", f"constraints: unknown canonical field {name!r}",
                             "fields: " + ", ".join(CANONICAL_FIELDS))
        minimum = rules.get("min_length")
        if minimum is not None and (isinstance(minimum, bool) or not isinstance(minimum, int) or minimum < 0):
            raise check.fail("constraints", f"constraints.{name}.min_length must be a whole number of 0 or more, "
                                            f"got {_shape(minimum)}")
    validators = check.options(data, "validators", nested=True)
    loader_options = check.options(data, "loader_options", nested=False)
    severity = {}
    for code, level in check.mapping(data, "severity").items():
        if level is False:  # an unquoted off (or false) is YAML's boolean false: it means "off"
            level = "off"
        if level not in SEVERITY_LEVELS:
            raise check.fail("severity", f"severity.{code} is {_shape(level)}: severity must map issue codes to "
                                         + " | ".join(SEVERITY_LEVELS),
                             f"an unquoted on/yes/true is a YAML boolean: write the level, e.g. {code}: warning "
                             f"(an unquoted off or false is read as off)" if level is True else None)
        severity[code] = level
    check.text(data, "source", scalar_ok=True)  # checked; a spec's source is where it was read from
    return DatasetSpec(
        name=check.text(data, "name", scalar_ok=True) or Path(source).stem,
        format=fmt,
        columns=columns,
        instruction=check.text(data, "instruction"),
        system=check.text(data, "system"),
        task=task,
        labels=[str(x) for x in labels],
        template=check.text(data, "template"),
        constraints=constraints,
        validators=validators,
        severity=severity,
        description=check.text(data, "description", scalar_ok=True) or "",
        loader=check.text(data, "loader"),
        loader_options=loader_options,
        source=source,
    )


def detect_format(record: dict) -> str | None:
    """Guess the format of a record from its keys, or None."""
    keys = set(record)
    if "messages" in keys and isinstance(record["messages"], list):
        return "messages"
    if "conversations" in keys and isinstance(record["conversations"], list):
        return "sharegpt"
    if "instruction" in keys and "output" in keys:
        return "alpaca"
    if "prompt" in keys and "completion" in keys:
        return "prompt_completion"
    if "instruction" in keys and "response" in keys:
        return "instruction_response"
    if "text" in keys:
        return "text"
    return None


def resolve_spec(
    spec: DatasetSpec | None,
    first_record: dict | None,
    columns: Mapping[str, str] | None = None,
    instruction: str | None = None,
) -> tuple[DatasetSpec, str]:
    """The spec to use: the one given, or detected from the first record, with column
    overrides (``{"output": "label"}``) and a constant instruction applied.

    Returns the spec and a one-line note saying how it was chosen.
    """
    overrides = dict(columns or {})
    if spec is not None:
        chosen = spec
        note = f"spec {chosen.name} ({chosen.source})"
    else:
        fmt = detect_format(first_record or {}) if first_record is not None else None
        if fmt is None and overrides:
            fmt = "alpaca"
        if fmt is None:
            keys = ", ".join(map(str, (first_record or {}).keys())) or "none"
            raise UsageError(
                f"cannot detect the dataset format from the columns ({keys})",
                hint="pass --spec NAME (built-in: " + ", ".join(builtin_spec_names())
                + ") or map columns with --column output=COLUMN --instruction \"...\"",
            )
        chosen = spec_from_dict({"name": fmt, "format": fmt}, f"detected:{fmt}")
        note = f"detected format {fmt} from the columns of the first record"
    for canonical, column in overrides.items():
        if canonical not in CANONICAL_FIELDS:
            raise UsageError(f"--column: unknown canonical field {canonical!r}", hint="fields: " + ", ".join(CANONICAL_FIELDS))
        chosen.columns[canonical] = column
    if instruction is not None:
        chosen.instruction = instruction
        chosen.columns.pop("instruction", None)
    return chosen, note


def examples_from_records(records: Iterable[dict], spec: DatasetSpec, start: int = 0) -> Iterator[Example]:
    """Map records to Examples, numbering rows from ``start``."""
    for row, record in enumerate(records, start=start):
        yield spec.to_example(record, row)
