"""The JSON Schemas of the results that reporters receive and the JSON reports hold.

One file per result kind and version, shipped with the package: ``validate-1.json``,
``train-1.json``, ``eval-1.json`` beside this module. ``write_reports`` hands every reporter
the data with its ``schema_version`` (an integer, first key), and the JSON reports and
``--json`` copies carry it, so a consumer can tell which schema a file follows. The README's
reporter section is generated from these files (``tests/test_docs.py``).

A version changes when a field is removed or changes meaning; new optional fields may be added
within a version (consumers ignore fields they do not know; the schemas allow them).
"""
from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path
from typing import Any

SCHEMA_DIR = Path(__file__).resolve().parent
SCHEMA_VERSIONS = {"validate": 1, "train": 1, "eval": 1}  # result kind -> current schema version


def schema_path(kind: str, version: int | None = None) -> Path:
    """The schema file of a result kind (the current version unless one is given)."""
    if kind not in SCHEMA_VERSIONS:
        raise KeyError(f"no schema for result kind {kind!r}; kinds: {', '.join(SCHEMA_VERSIONS)}")
    return SCHEMA_DIR / f"{kind}-{version or SCHEMA_VERSIONS[kind]}.json"


@lru_cache(maxsize=None)
def _load(path: Path) -> str:
    return path.read_text(encoding="utf-8")


def schema(kind: str, version: int | None = None) -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of a result kind, as a fresh dict."""
    return json.loads(_load(schema_path(kind, version)))


def versioned(kind: str, data: dict[str, Any]) -> dict[str, Any]:
    """``data`` with ``schema_version`` first (unchanged for a kind without a schema)."""
    if kind not in SCHEMA_VERSIONS:
        return data
    return {"schema_version": SCHEMA_VERSIONS[kind], **{k: v for k, v in data.items() if k != "schema_version"}}


def validate_result(kind: str, data: dict[str, Any]) -> None:
    """Raise ``jsonschema.ValidationError`` if ``data`` does not follow the kind's schema.

    Needs the ``jsonschema`` package (sftkit's ``dev`` extra); the version checked is the
    data's own ``schema_version`` when it has one.
    """
    import jsonschema

    version = data.get("schema_version") if isinstance(data, dict) else None
    jsonschema.validate(data, schema(kind, version if isinstance(version, int) else None),
                        cls=jsonschema.Draft202012Validator)


# -- walking a schema: the README's field tables, and the fields a result really has -----------------

def _branch(node: dict) -> dict:
    """The non-null branch of a ``oneOf`` (null or an object), else the node itself."""
    options = [option for option in node.get("oneOf", ()) if option.get("type") != "null"]
    return options[0] if options else node


def _key(node: dict) -> str:
    return f"<{node.get('x-key', 'key')}>"


def fields(node: dict, path: str = "") -> list[tuple[str, dict, bool]]:
    """Every field a schema describes, depth first: ``(path, its schema node, required)``.

    Paths read like ``issues[].code`` (an array's items), ``models.<model>.name`` (an object
    keyed by name, ``x-key`` naming the key) and ``metrics.<sub_metric>.difference``;
    ``required`` says whether the field is always there when its parent is.
    """
    node = _branch(node)
    out: list[tuple[str, dict, bool]] = []
    required = set(node.get("required", ()))
    for name, sub in node.get("properties", {}).items():
        here = f"{path}.{name}" if path else name
        out.append((here, sub, name in required))
        out += fields(sub, here)
    extra = node.get("additionalProperties")
    if isinstance(extra, dict) and extra:
        here = f"{path}.{_key(node)}" if path else _key(node)
        out.append((here, extra, False))
        out += fields(extra, here)
    items = node.get("items")
    if isinstance(items, dict) and ("properties" in items or "additionalProperties" in items):
        out += fields(items, f"{path}[]")
    return out


def data_fields(kind: str, data: Any) -> set[str]:
    """The field paths (as ``fields`` writes them) that a result of ``kind`` really holds.

    A key the schema does not name is recorded under its own name, so a test can compare the
    fields a sample has with those a real command writes.
    """
    return _walk(data, schema(kind), "")


def _walk(value: Any, node: dict, path: str) -> set[str]:
    node = _branch(node)
    out: set[str] = set()
    if isinstance(value, dict) and ("properties" in node or isinstance(node.get("additionalProperties"), dict)):
        named, extra = node.get("properties", {}), node.get("additionalProperties")
        for key, item in value.items():
            if key in named:
                name, sub = key, named[key]
            elif isinstance(extra, dict) and extra:
                name, sub = _key(node), extra
            else:
                name, sub = key, {}
            here = f"{path}.{name}" if path else name
            out.add(here)
            out |= _walk(item, sub, here)
    elif isinstance(value, list) and isinstance(node.get("items"), dict):
        for item in value:
            out |= _walk(item, node["items"], f"{path}[]")
    return out
