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


def format_template(fmt: str) -> str:
    """The template of the built-in spec named after a format (``messages`` -> ``chatml``)."""
    text = resources.files("sftkit.datasets_spec").joinpath(f"{fmt}.yaml").read_text("utf-8")
    template = safe_yaml(text, f"built-in:{fmt}").get("template")
    if not isinstance(template, str):
        raise AssertionError(f"the built-in spec {fmt}.yaml names no template")  # pragma: no cover
    return template


def load_spec(name_or_path: str | DatasetSpec) -> DatasetSpec:
    """A spec by built-in name (``alpaca``), from a YAML file path, or a copy of a given spec."""
    if isinstance(name_or_path, DatasetSpec):
        return copy.deepcopy(name_or_path)
    path = Path(name_or_path)
    names = builtin_spec_names()
    if path.suffix in (".yaml", ".yml"):
        if not path.is_file():
            raise UsageError(f"spec file {name_or_path} does not exist")
        text = _read_yaml_text(path)
        source = str(path)
    else:
        if name_or_path not in names:
            # Only .yaml/.yml files are read as specs: any other path is refused unread.
            raise UsageError(f"unknown spec {name_or_path!r}; built-in specs: {', '.join(names)}",
                             hint="or pass the path of a YAML spec (ending in .yaml or .yml)")
        text = resources.files("sftkit.datasets_spec").joinpath(f"{name_or_path}.yaml").read_text("utf-8")
        source = f"built-in:{name_or_path}"
    return spec_from_dict(safe_yaml(text, source), source)


def _read_yaml_text(path: Path) -> str:
    data = path.read_bytes()
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise DataError(f"invalid UTF-8 at byte {exc.start}", path=str(path),
                        line=data.count(b"\n", 0, exc.start) + 1, hint="re-save the file as UTF-8") from None


def safe_yaml(text: str, source: str) -> Any:
    """Parse YAML with the safe loader; aliases are refused (no billion-laughs expansion)."""
    import yaml

    class NoAliasLoader(yaml.SafeLoader):
        def compose_node(self, parent, index):  # type: ignore[override]
            if self.check_event(yaml.events.AliasEvent):
                event = self.peek_event()
                raise DataError("YAML aliases (*name) are not allowed", path=source,
                                line=event.start_mark.line + 1, hint="write the value out in full")
            return super().compose_node(parent, index)

    try:
        return yaml.load(text, Loader=NoAliasLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        raise DataError(f"invalid YAML: {getattr(exc, 'problem', exc)}", path=source,
                        line=mark.line + 1 if mark else None) from None


def spec_from_dict(data: Any, source: str = "<spec>") -> DatasetSpec:
    """Build and check a DatasetSpec from parsed YAML."""
    import difflib

    if not isinstance(data, dict):
        raise DataError("a spec must be a mapping of keys to values", path=source)
    for key in data:
        if key not in SPEC_KEYS:
            close = difflib.get_close_matches(str(key), SPEC_KEYS, n=1)
            raise DataError(f"unknown spec key {key!r}", path=source,
                            hint=f"did you mean {close[0]!r}?" if close else "keys: " + ", ".join(SPEC_KEYS))
    fmt = data.get("format", "alpaca")
    if fmt not in FORMATS:
        raise DataError(f"unknown format {fmt!r}", path=source, field="format", hint="formats: " + ", ".join(FORMATS))
    columns = dict(DEFAULT_COLUMNS[fmt])
    given = data.get("columns") or {}
    if not isinstance(given, dict):
        raise DataError("columns must map canonical fields to source columns", path=source, field="columns")
    for canonical, column in given.items():
        if canonical not in CANONICAL_FIELDS:
            raise DataError(f"unknown canonical field {canonical!r}", path=source, field="columns",
                            hint="fields: " + ", ".join(CANONICAL_FIELDS))
        if column is None:
            columns.pop(canonical, None)
        else:
            columns[canonical] = str(column)
    task = data.get("task", "generation")
    if task not in TASKS:
        raise DataError(f"unknown task {task!r}", path=source, field="task", hint="tasks: " + ", ".join(TASKS))
    labels = data.get("labels") or []
    if not isinstance(labels, list) or not all(isinstance(x, (str, int)) for x in labels):
        raise DataError("labels must be a list of strings", path=source, field="labels")
    for key in ("constraints", "validators", "loader_options"):
        if not isinstance(data.get(key) or {}, dict):
            raise DataError(f"{key} must be a mapping", path=source, field=key)
    severity = data.get("severity") or {}
    if not isinstance(severity, dict) or any(v not in SEVERITY_LEVELS for v in severity.values()):
        raise DataError("severity must map issue codes to " + " | ".join(SEVERITY_LEVELS), path=source, field="severity")
    instruction = data.get("instruction")
    if instruction is not None and not isinstance(instruction, str):
        raise DataError("instruction must be a string", path=source, field="instruction")
    return DatasetSpec(
        name=str(data.get("name") or Path(source).stem),
        format=fmt,
        columns=columns,
        instruction=instruction,
        system=data.get("system"),
        task=task,
        labels=[str(x) for x in labels],
        template=data.get("template"),
        constraints=data.get("constraints") or {},
        validators=data.get("validators") or {},
        severity={str(k): str(v) for k, v in severity.items()},
        description=str(data.get("description") or ""),
        loader=data.get("loader"),
        loader_options=data.get("loader_options") or {},
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
