"""User-given values checked once, by value as well as type, before any work starts.

One mechanism for every value a user gives: component options (loaders, templates, masking
strategies, validators, metrics) and recipe keys. Each value has a declared type, constraints
included, written the standard way with ``typing.Annotated`` and pydantic's ``Field``::

    def leakage(context, num_perm: Annotated[int, Field(ge=1, le=4096, description="MinHash permutations")] = 128,
                mode: Literal["fast", "exact"] = "fast"): ...

pydantic's ``TypeAdapter`` coerces and checks each value (NaN and infinity are refused
everywhere); the message is sftkit's own, built from the value's JSON Schema: what the value
must be ("an integer from 1 to 4096"), or only the bound it broke ("at least 1"). An option
without an annotation keeps the type of its default (a bool option takes true/false, ...).

Text is read as on the command line wherever it comes from (``"3"``, ``"0.5"``, ``"true"``,
``"a,b"`` for a list), so YAML's unquoted ``1e-4`` (which YAML reads as text) is the number it
looks like; a YAML boolean for a number option, or a number for a boolean one, is refused.
Command-line text is a ``CommandLineText``, which remembers the flag it came from.
"""
from __future__ import annotations

import inspect
import math
import typing
from dataclasses import dataclass
from functools import cached_property
from typing import Any, Callable

from pydantic import ConfigDict, TypeAdapter, ValidationError

EMPTY = inspect.Parameter.empty
CONFIG = ConfigDict(allow_inf_nan=False)
# pydantic error types that mean "the right kind of value, past one of its bounds"
RANGE_ERRORS = frozenset({"greater_than", "greater_than_equal", "less_than", "less_than_equal", "multiple_of"})
# a custom validator (AfterValidator, ...) raised: its message says what the value must be
CUSTOM_ERRORS = frozenset({"value_error", "assertion_error"})
SHOWN_CHARS = 60  # of a refused value, in a message


class CommandLineText(str):
    """Text given on the command line: parsed like a flag (``"3"`` -> 3, ``"yes"`` -> True,
    ``"a,b"`` -> a list); ``flag`` is how the user gave it (``--validator-option
    quality.num_perm=0``), for messages."""

    flag: str = ""

    def __new__(cls, value: str, flag: str = "") -> "CommandLineText":
        text = super().__new__(cls, value)
        text.flag = flag
        return text


class ValueProblem(Exception):
    """A value its declaration refuses; ``allowed`` completes "must be ..." ("at least 1")."""

    def __init__(self, allowed: str, value: Any):
        super().__init__(f"must be {allowed}, got {shown(value)}")
        self.allowed = allowed
        self.value = value


def shown(value: Any) -> str:
    """A refused value for a message: its repr (command-line numbers bare), cut to ``SHOWN_CHARS`` characters."""
    try:
        text = str(value) if isinstance(value, CommandLineText) and _numeric(value) else repr(value)
    except Exception:  # a value whose repr fails is shown by its type
        text = f"<{type(value).__name__}>"
    return text if len(text) <= SHOWN_CHARS else text[:SHOWN_CHARS - 1] + "…"


def _numeric(text: str) -> bool:
    """Command-line text that reads as a number is shown bare (``got 0``), other text quoted."""
    try:
        float(text)
        return True
    except ValueError:
        return False


@dataclass
class Declared:
    """One value's declaration: its name, type (constraints included) and default."""

    name: str
    annotation: Any
    default: Any = EMPTY
    declared: bool = True  # False: no annotation, the type comes from the default

    @cached_property
    def adapter(self) -> TypeAdapter:
        return TypeAdapter(self.annotation, config=CONFIG)

    @cached_property
    def schema(self) -> dict:
        """The JSON Schema of the value (pydantic's), with its description and JSON default."""
        schema = dict(self.adapter.json_schema())
        if self.default is not EMPTY:
            schema["default"] = json_value(self.default)
        return schema

    @property
    def description(self) -> str:
        return str(self.schema.get("description") or "")

    @property
    def allowed(self) -> str:
        """What the value must be, in words: ``an integer from 1 to 4096``."""
        return phrase(self.schema, self.schema.get("$defs", {}))

    def check(self, value: Any, *, text_booleans: bool = True) -> Any:
        """The value coerced to its type, or ``ValueProblem`` saying what is allowed.

        Text is read as on the command line (``"3"``, ``"0.5"``, ``"a,b"`` for a list, and with
        ``text_booleans`` ``"true"``/``"no"`` for a boolean); a boolean for a number, or a
        number for a boolean, is refused.
        """
        types = json_types(self.schema) - {"null"}
        given = value
        if isinstance(value, str) and "array" in types and "string" not in types:
            value = [item.strip() for item in value.split(",") if item.strip()]
        elif isinstance(value, bool) and types & {"integer", "number"} and "boolean" not in types:
            raise ValueProblem(self.allowed, given)
        elif types == {"boolean"} and not isinstance(value, bool) and (
                isinstance(value, (int, float)) or (isinstance(value, str) and not text_booleans)):
            raise ValueProblem(self.allowed, given)
        try:
            checked = self.adapter.validate_python(value)
        except ValidationError as exc:
            raise ValueProblem(self._broken(exc), given) from None
        except (TypeError, ValueError, RecursionError):  # a value pydantic cannot even inspect
            raise ValueProblem(self.allowed, given) from None
        return str(checked) if isinstance(checked, CommandLineText) else checked

    def _broken(self, exc: ValidationError) -> str:
        """What the value must be, for the first error: the bound alone when only a bound failed."""
        error = exc.errors()[0]
        context = error.get("ctx") or {}
        if error["type"] in CUSTOM_ERRORS and not error["loc"]:
            return str(context.get("error") or error["msg"])
        if error["type"] in RANGE_ERRORS and not error["loc"]:
            words = {"ge": "at least", "gt": "more than", "le": "at most", "lt": "less than",
                     "multiple_of": "a multiple of"}
            for bound, text in words.items():
                if bound in context:
                    return f"{text} {number(context[bound])}"
        return self.allowed


def json_value(value: Any) -> Any:
    """A default as JSON data (a tuple as a list); its repr when it has no JSON form."""
    from pydantic_core import to_jsonable_python

    try:
        data = to_jsonable_python(value)
    except Exception:
        return repr(value)
    if isinstance(data, float) and not math.isfinite(data):
        return repr(value)
    return data


# -- declarations from a callable's signature -----------------------------------------------------

def declarations(func: Callable, skip: int, *, strict: bool = False) -> dict[str, Declared]:
    """The options of a component: every parameter after the first ``skip`` positional ones
    (``*args``/``**kwargs`` excepted), with its declared or inferred type.

    An annotation that cannot be resolved or has no pydantic schema falls back to the type of
    the default; ``strict`` (the built-ins) raises instead, as a bug.
    """
    target = func if inspect.isroutine(func) else getattr(func, "__call__")
    params = list(inspect.signature(target).parameters.values())
    try:
        hints = typing.get_type_hints(target, include_extras=True)
    except Exception:
        if strict:
            raise
        hints = {}
    out: dict[str, Declared] = {}
    positional = 0
    for param in params:
        if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            continue
        if param.kind in (param.POSITIONAL_ONLY, param.POSITIONAL_OR_KEYWORD) and positional < skip:
            positional += 1
            continue
        out[param.name] = _declared(param.name, hints.get(param.name, EMPTY), param.default, strict)
    return out


def default_problems(declared: dict[str, Declared]) -> list[str]:
    """Options whose own default their declaration refuses (for conformance checks): ``[]`` when all fit."""
    problems = []
    for name, option in declared.items():
        if option.default is EMPTY or option.default is None:
            continue
        try:
            option.check(option.default)
        except ValueProblem as problem:
            problems.append(f"option {name!r}: its default {problem.value!r} is refused by its declaration "
                            f"(it must be {problem.allowed})")
    return problems


def _declared(name: str, annotation: Any, default: Any, strict: bool) -> Declared:
    if annotation is not EMPTY:
        declared = Declared(name, annotation, default)
        try:
            declared.schema  # builds the adapter: an annotation pydantic has no schema for fails here
            return declared
        except Exception:
            if strict:
                raise
    return Declared(name, inferred_type(default), default, declared=False)


def inferred_type(default: Any) -> Any:
    """The type of an unannotated option, from its default (``Any`` when the default says nothing)."""
    if default is EMPTY or default is None:
        return Any
    for kind in (bool, int, float, str):
        if type(default) is kind:
            return kind
    if isinstance(default, (list, tuple)):
        return list[Any]
    if isinstance(default, dict):
        return dict[str, Any]
    return Any


# -- JSON Schema in words --------------------------------------------------------------------------

def _resolve(schema: dict, defs: dict) -> dict:
    ref = schema.get("$ref", "")
    if ref.startswith("#/$defs/") and ref[len("#/$defs/"):] in defs:
        return {**defs[ref[len("#/$defs/"):]], **{k: v for k, v in schema.items() if k != "$ref"}}
    return schema


def branches(schema: dict, defs: dict) -> list[dict]:
    """The alternatives of a schema (``anyOf``/``oneOf``), references resolved."""
    schema = _resolve(schema, defs)
    alternatives = schema.get("anyOf") or schema.get("oneOf")
    if not alternatives:
        return [schema]
    return [b for alternative in alternatives for b in branches(alternative, defs)]


def json_types(schema: dict) -> set[str]:
    """The JSON types a schema allows (``{"integer", "null"}``); empty for any value."""
    found: set[str] = set()
    for branch in branches(schema, schema.get("$defs", {})):
        kind = branch.get("type")
        if isinstance(kind, list):
            found.update(kind)
        elif isinstance(kind, str):
            found.add(kind)
        elif "enum" in branch or "const" in branch:
            values = branch.get("enum", [branch.get("const")])
            found.update("string" if isinstance(v, str) else "boolean" if isinstance(v, bool)
                         else "integer" if isinstance(v, int) else "number" for v in values)
    return found


def number(value: Any) -> str:
    """1.0 -> '1', 1e-05 -> '1e-05', 4294967295 -> '4294967295'."""
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e15:
        return str(int(value))
    return str(value)


def limits(schema: dict) -> str:
    """A number's range in words: ``from 0 to 1``, ``more than 0``, ``at least 1``, or ''."""
    low = high = ""
    if "exclusiveMinimum" in schema:
        low = f"more than {number(schema['exclusiveMinimum'])}"
    elif "minimum" in schema:
        low = f"at least {number(schema['minimum'])}"
    if "exclusiveMaximum" in schema:
        high = f"less than {number(schema['exclusiveMaximum'])}"
    elif "maximum" in schema:
        high = f"at most {number(schema['maximum'])}"
    if low.startswith("at least") and high.startswith("at most"):
        text = f"from {number(schema['minimum'])} to {number(schema['maximum'])}"
    else:
        text = " and ".join(part for part in (low, high) if part)
    if "multipleOf" in schema:
        text = " and ".join(part for part in (text, f"a multiple of {number(schema['multipleOf'])}") if part)
    return text


def _choice(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return value if isinstance(value, str) and value else repr(value)


PLURAL = {"string": "text", "integer": "integers", "number": "numbers", "boolean": "true/false values",
          "object": "mappings", "array": "lists"}


def _text(schema: dict) -> str:
    low, high = schema.get("minLength"), schema.get("maxLength")
    if low is not None and low == high:
        words = "exactly one character" if low == 1 else f"text of exactly {low} characters"
    elif low == 1 and high is None:
        words = "non-empty text"
    elif low or high is not None:
        parts = ([f"at least {low} characters"] if low else []) + ([f"at most {high}"] if high is not None else [])
        words = "text of " + " and ".join(parts)
    else:
        words = "a path" if schema.get("format") == "path" else "text"
    if schema.get("pattern"):
        words += f" matching {schema['pattern']}"
    return words


def _list(schema: dict, defs: dict) -> str:
    items = _resolve(schema.get("items") or {}, defs)
    low, high = schema.get("minItems"), schema.get("maxItems")
    head = "a non-empty list" if low == 1 and high is None else "a list"
    if "enum" in items:
        head += " of " + ", ".join(_choice(v) for v in items["enum"])
    elif items.get("type") == "string":
        head += " of " + _text(items)
    elif isinstance(items.get("type"), str):
        head += " of " + PLURAL.get(items["type"], "values")
    if (low or 0) > 1 or high is not None:
        head += " with " + " and ".join(([f"at least {low}"] if (low or 0) > 1 else [])
                                        + ([f"at most {high}"] if high is not None else [])) + " items"
    return head


def _one(schema: dict, defs: dict) -> str:
    """One alternative of a schema in words."""
    if "enum" in schema:
        choices = schema["enum"]
        return _choice(choices[0]) if len(choices) == 1 else "one of " + ", ".join(_choice(v) for v in choices)
    if "const" in schema:
        return _choice(schema["const"])
    kind = schema.get("type")
    if kind in ("integer", "number"):
        noun = "an integer" if kind == "integer" else "a number"
        range_text = limits(schema)
        if not range_text:
            return noun if kind == "integer" else "a finite number"
        return f"{noun} {'of ' if range_text.startswith('at ') else ''}{range_text}"
    if kind == "boolean":
        return "true or false"
    if kind == "string":
        return _text(schema)
    if kind == "array":
        return _list(schema, defs)
    if kind == "object":
        values = schema.get("additionalProperties")
        if isinstance(values, dict) and values:
            return f"a mapping (key: value) whose values are {phrase(values, defs)}"
        return "a mapping (key: value)"
    if kind == "null":
        return "null"
    return "any value"


def phrase(schema: dict, defs: dict | None = None) -> str:
    """What a schema allows, in words (completes "must be ..."): ``one of lora, full``."""
    defs = defs if defs is not None else schema.get("$defs", {})
    parts = [_one(branch, defs) for branch in branches(schema, defs)]
    shown_parts = [p for p in parts if p != "null"]
    if not shown_parts:
        return "null"
    if "any value" in shown_parts:
        return "any value"
    text = " or ".join(dict.fromkeys(shown_parts))
    return text + (" (or null)" if "null" in parts else "")
