"""How an evaluation was made, recorded in eval.json (per model, ``models.<model>.provenance``):
the resolved template and its options, the system prompt, the generation settings, the
generator and its version, a sha256 of each prompt and of the whole prompt set, the data
file's sha256 and row count, and sftkit's version. ``sftkit eval --diff`` pairs two results
only when their prompt-set hashes match.
"""
from __future__ import annotations

import hashlib
from dataclasses import replace
from pathlib import Path
from typing import Any

CHUNK = 1 << 20


def text_sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def prompt_set_sha256(prompt_hashes: list[str]) -> str:
    """The hash of the prompt set: sha256 over each prompt's hash, in order, one a line."""
    return text_sha256("".join(h + "\n" for h in prompt_hashes))


def file_sha256(path: str | Path) -> str:
    """sha256 of a file's bytes; of a folder: over each file's relative path and hash, sorted."""
    path = Path(path)
    if path.is_file():
        digest = hashlib.sha256()
        with path.open("rb") as handle:
            for chunk in iter(lambda: handle.read(CHUNK), b""):
                digest.update(chunk)
        return digest.hexdigest()
    lines = [f"{p.relative_to(path).as_posix()} {file_sha256(p)}\n" for p in sorted(path.rglob("*")) if p.is_file()]
    return text_sha256("".join(lines))


def data_rows(request: Any) -> int:
    """The rows the data file holds (all of them, not only those evaluated; broken lines not counted)."""
    from sftkit.pipeline import load_records

    return sum(1 for _ in load_records(replace(request, skip_invalid=True)))


def resolved_template_options(registry: Any, template: str, options: dict) -> dict:
    """The template's option defaults with the options set on top (what rendered the prompts)."""
    from sftkit.options import EMPTY, json_value

    defaults = {k: json_value(v) for k, v in registry.get("templates", template).options().items() if v is not EMPTY}
    return {**defaults, **{k: json_value(v) for k, v in options.items()}}


def provenance(*, registry: Any, request: Any, prepared: Any, render: Any, generation: dict,
               prompt_hashes: list[str]) -> dict:
    """The record shared by every model of one evaluation (each model's entry holds a copy)."""
    from sftkit import __version__

    options = resolved_template_options(registry, prepared.template_name, dict(render.template_options))
    system = options.get("system") or prepared.spec.system or None
    return {
        "template": prepared.template_name,
        "template_options": options,
        "system_prompt": system if isinstance(system, str) else None,
        "generation": dict(generation),
        "generator": generation.get("generator"),
        "generator_version": generation.get("generator_version"),
        "prompt_set_sha256": prompt_set_sha256(prompt_hashes),
        "prompts": len(prompt_hashes),
        "data": str(prepared.path),
        "data_sha256": file_sha256(prepared.path),
        "data_rows": data_rows(request),
        "sftkit_version": __version__,
    }
