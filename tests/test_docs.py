"""The plugin documentation cannot drift from the hooks.

- The README's hook reference is generated from ``sftkit/hookspecs.py``; it must match.
  Regenerate it after changing a hook docstring with ``.venv/bin/python tests/test_docs.py``.
- Every hook has a README entry, a conformance check in ``sftkit.testing``, a test over the
  built-ins in ``tests/test_conformance.py`` and a component in the example plugin (which
  ``make test`` installs and uses), and the README names no hook that does not exist.
- The README's ten-line plugin runs and passes its conformance check; its pyproject snippet
  declares the entry point in the ``sftkit`` group.
"""
from __future__ import annotations

import inspect
import re
import sys
import types
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
BEGIN = "<!-- hook reference: generated from sftkit/hookspecs.py by tests/test_docs.py; do not edit by hand -->"
END = "<!-- end of hook reference -->"

sys.path.insert(0, str(ROOT))
from sftkit import hookspecs  # noqa: E402
from sftkit.registry import POSITIONAL_ARGS, SINGULAR  # noqa: E402
from sftkit.testing import CHECKS  # noqa: E402

EXAMPLE_PLUGIN = ROOT / "tests" / "example_plugin" / "sftkit_example_plugin.py"


def hook_specs() -> dict[str, types.FunctionType]:
    """Every function in sftkit.hookspecs marked as a hook spec, by name (not from KINDS)."""
    return {name: func for name, func in vars(hookspecs).items()
            if inspect.isfunction(func) and hasattr(func, "sftkit_spec")}


def example_components() -> dict[str, list[str]]:
    """The component names the example plugin registers, by hook."""
    namespace: dict = {}
    exec(compile(EXAMPLE_PLUGIN.read_text(), str(EXAMPLE_PLUGIN), "exec"), namespace)
    out = {}
    for name in hook_specs():
        names: list[str] = []
        if name in namespace:
            namespace[name](lambda component, name=None: names.append(name or component.__name__))
        out[name] = names
    return out


def hook_reference() -> str:
    """The README's hook reference, generated from the hook specs' docstrings."""
    examples = example_components()
    parts = [BEGIN]
    for name, func in hook_specs().items():
        kind = name[len("register_"):]
        doc = inspect.getdoc(func).replace("``", "`")
        signature = f"{SINGULAR[kind].replace(' ', '_')}({', '.join(POSITIONAL_ARGS[kind])}, **options)"
        shown = ", ".join(f"`{n}`" for n in examples.get(name, [])) or "none"
        parts += ["", f"#### `{name}(register)`", "", f"A {SINGULAR[kind]}: `{signature}`.", "", doc]
        attributes = hookspecs.OPTIONAL_ATTRIBUTES[kind]
        if attributes:
            parts += ["", "Optional attributes:", ""] + [f"- `{attr}`: {text}" for attr, text in attributes.items()]
        parts += ["", f"Conformance check: `sftkit.testing.{CHECKS[kind]}`. In the example plugin: {shown}."]
    parts += ["", END]
    return "\n".join(parts)


def readme_reference(text: str) -> str:
    start, end = text.find(BEGIN), text.find(END)
    assert start >= 0 and end > start, f"README.md has no hook reference between {BEGIN!r} and {END!r}"
    return text[start:end + len(END)]


def plugin_section(text: str) -> str:
    start = text.find("## Writing a plugin")
    assert start >= 0, "README.md has no '## Writing a plugin' section"
    end = text.find("\n## ", start + 1)
    return text[start:end if end > 0 else len(text)]


# -- tables that mirror code: generated from it ----------------------------------------------------

def _cell(text: object) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _default(value: object) -> str:
    if value is None or value == () or value == [] or value == {}:
        return "none"
    if value == "":
        return "empty"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return ", ".join(f"`{v}`" for v in value)
    return f"`{value}`"


def _flag(param) -> str:
    import click

    if param.is_flag:
        return "`" + "/".join(param.opts + param.secondary_opts) + "`"
    metavar = param.metavar or ("|".join(param.type.choices) if isinstance(param.type, click.Choice)
                                else param.type.name.upper())
    return f"`{param.opts[0]} {metavar}`".replace("|", "\\|")


def option_table(params) -> str:
    """| option | meaning | for click options (help text and shown default)."""
    import click

    rows = ["| option | meaning |", "| --- | --- |"]
    for param in params:
        if not isinstance(param, click.Option) or param.hidden:
            continue
        meaning = param.help or ""
        if param.show_default and param.default not in (None, False, ()):
            meaning += f" Default: `{param.default}`."
        rows.append(f"| {_flag(param)} | {_cell(meaning)} |")
    return "\n".join(rows)


def _command(target: str):
    from sftkit.cli import COMMANDS, cli

    return cli.get_command(None, target) if target in COMMANDS else None


def _shared_params():
    import click

    from sftkit.cli import data_flags, render_flags

    return click.command()(data_flags(render_flags(lambda **_: None))).params


def _own_params(name: str):
    shared = {p.name for p in _shared_params()}
    return [p for p in _command(name).params if p.name not in shared]


def recipe_table() -> str:
    """Every recipe key with its flag, default, allowed values and meaning (sftkit.recipe.Recipe's fields)."""
    from dataclasses import MISSING, fields

    from sftkit.recipe import Recipe, allowed_values

    flags: dict[str, list[str]] = {}
    for param in _command("train").params:
        key = {"no_validate": "validate"}.get(param.name, param.name)
        if getattr(param, "is_flag", None) is not None and key != "resume":
            flags.setdefault(key, []).append(_flag(param))
    rows = ["| key | flag | default | allowed | meaning |", "| --- | --- | --- | --- | --- |"]
    for f in fields(Recipe):
        default = f.default_factory() if f.default is MISSING else f.default
        rows.append(f"| `{f.name}` | {' / '.join(flags.get(f.name, [])) or 'recipe only'} | "
                    f"{'required' if f.name == 'data' else _default(default)} | {_cell(allowed_values(f.name))} | "
                    f"{_cell(f.metadata['doc'])} |")
    return "\n".join(rows)


def _builtin_registry():
    from sftkit.testing import fresh_registry

    return fresh_registry()


def options_table(kind: str, title: str) -> str:
    """Every built-in component's options of one kind: default, allowed values (from the
    declaration, ``sftkit.options``) and meaning (its description)."""
    from sftkit.options import EMPTY

    registry = _builtin_registry()
    rows = [f"| {title} | option | default | allowed | meaning |", "| --- | --- | --- | --- | --- |"]
    for name, comp in registry.components(kind).items():
        for option, declared in comp.declared_options.items():
            default = "required" if declared.default is EMPTY else _default(declared.default)
            rows.append(f"| `{name}` | `{option}` | {_cell(default)} | {_cell(declared.allowed)} | "
                        f"{_cell(declared.description)} |")
    return "\n".join(rows)


def validator_options_table() -> str:
    """Every built-in validator's options (from their declarations)."""
    return options_table("validators", "validator")


def metric_options_table() -> str:
    """Every built-in metric's options (from their declarations)."""
    return options_table("metrics", "metric")


def issue_code_table() -> str:
    """Every issue code the built-in validators declare (their ``codes`` attribute)."""
    registry = _builtin_registry()
    rows = ["| code | severity | validator | what it means | how to fix |", "| --- | --- | --- | --- | --- |"]
    for name, comp in registry.components("validators").items():
        for code, (severity, meaning, fix) in (comp.attribute("codes") or {}).items():
            rows.append(f"| `{code}` | {_cell(severity)} | {name} | {_cell(meaning)} | {_cell(fix)} |")
    return "\n".join(rows)


def _schema_type(node: dict) -> str:
    if "const" in node:
        return f"`{node['const']}`"
    if "enum" in node:
        return ", ".join(f"`{v}`" for v in node["enum"])
    if "oneOf" in node:
        return " or ".join(_schema_type(option) for option in node["oneOf"])
    kinds = node.get("type", "any")
    kinds = kinds if isinstance(kinds, list) else [kinds]
    return " or ".join("null" if k == "null" else k for k in kinds)


def result_schema_tables() -> str:
    """One table per result kind: every field of its JSON Schema (sftkit/schemas/*.json)."""
    from sftkit.schemas import SCHEMA_VERSIONS, fields, schema, schema_path

    parts = []
    for kind in SCHEMA_VERSIONS:
        document = schema(kind)
        rows = ["| field | type | meaning |", "| --- | --- | --- |"]
        for path, node, required in fields(document):
            meaning = node.get("description", "")
            if not required and not path.endswith(">"):
                meaning = "optional: " + meaning
            if "$comment" in node:
                meaning += f" ({node['$comment']})"
            rows.append(f"| `{path}` | {_cell(_schema_type(node))} | {_cell(meaning)} |")
        parts += [f"<details><summary><code>{kind}</code> result: <code>sftkit/schemas/{schema_path(kind).name}"
                  f"</code></summary>", "", _cell(document["description"]).capitalize() + ". "
                  + _cell(document.get("$comment", "")).capitalize(), "", *rows, "", "</details>", ""]
    return "\n".join(parts).rstrip()


def validation_context_table() -> str:
    """The fields and properties of sftkit.validation.ValidationContext, from their docstrings."""
    import dataclasses

    from sftkit.validation import ValidationContext

    rows = ["| field | meaning |", "| --- | --- |"]
    for f in dataclasses.fields(ValidationContext):
        rows.append(f"| `{f.name}` | {_cell(f.metadata['doc'])} |")
    for name, member in vars(ValidationContext).items():
        if name.startswith("_") or not (isinstance(member, property) or inspect.isfunction(member)):
            continue
        doc = " ".join(inspect.getdoc(member).split("\n\n")[0].split()).replace("``", "`")
        doc = doc[0].lower() + doc[1:]
        if isinstance(member, property):
            shown = name
        else:
            shown = f"{name}({', '.join(list(inspect.signature(member).parameters)[1:])})"
        rows.append(f"| `{shown}` | {_cell(doc)} |")
    return "\n".join(rows)


GENERATED = {
    "data-options": lambda: option_table(_shared_params()),
    "preview-options": lambda: option_table(_own_params("preview")),
    "validate-options": lambda: option_table(_own_params("validate")),
    "eval-options": lambda: option_table(_own_params("eval")),
    "chat-options": lambda: option_table(_command("chat").params),
    "export-options": lambda: option_table(_command("export").params),
    "recipe-keys": recipe_table,
    "validator-options": validator_options_table,
    "metric-options": metric_options_table,
    "issue-codes": issue_code_table,
    "result-schemas": result_schema_tables,
    "validation-context": validation_context_table,
}


def _markers(name: str) -> tuple[str, str]:
    return (f"<!-- generated: {name} (tests/test_docs.py writes it; do not edit by hand) -->",
            f"<!-- end: {name} -->")


def generated_section(text: str, name: str) -> str:
    begin, end = _markers(name)
    start, stop = text.find(begin), text.find(end)
    assert start >= 0 and stop > start, f"README.md has no generated section {name!r}"
    return text[start:stop + len(end)]


def generate(name: str) -> str:
    begin, end = _markers(name)
    return f"{begin}\n{GENERATED[name]()}\n{end}"


def write() -> None:
    """Regenerate the hook reference and every generated table inside README.md."""
    text = README.read_text(encoding="utf-8")
    text = text.replace(readme_reference(text), hook_reference())
    for name in GENERATED:
        text = text.replace(generated_section(text, name), generate(name))
    README.write_text(text, encoding="utf-8")


def test_readme_tables_that_mirror_code_are_generated_from_it():
    text = README.read_text(encoding="utf-8")
    stale = [name for name in GENERATED if generated_section(text, name) != generate(name)]
    assert not stale, (f"README.md's generated tables {stale} differ from the code: run "
                       f"`.venv/bin/python tests/test_docs.py` to regenerate them")


def test_every_recipe_key_and_train_flag_is_documented():
    from dataclasses import fields

    from sftkit.recipe import Recipe

    keys = {f.name for f in fields(Recipe)}
    assert all(f.metadata.get("doc") for f in fields(Recipe))
    flags = {p.name for p in _command("train").params if getattr(p, "is_flag", None) is not None}
    assert flags - keys == {"no_validate", "resume"}, flags - keys


# -- tests -------------------------------------------------------------------------------------

def test_readme_hook_reference_is_generated_from_the_hookspecs():
    current = readme_reference(README.read_text(encoding="utf-8"))
    assert current == hook_reference(), (
        "README.md's hook reference differs from sftkit/hookspecs.py: run `.venv/bin/python tests/test_docs.py` "
        "to regenerate it")


def test_every_hook_is_documented_checked_tested_and_exemplified():
    section = plugin_section(README.read_text(encoding="utf-8"))
    conformance = (ROOT / "tests" / "test_conformance.py").read_text(encoding="utf-8")
    import sftkit.testing as testing

    examples = example_components()
    specs = hook_specs()
    assert set(specs) == {f"register_{kind}" for kind in hookspecs.KINDS}
    for name in specs:
        kind = name[len("register_"):]
        assert f"#### `{name}(register)`" in section, f"{name} has no entry in the README hook reference"
        assert callable(getattr(testing, CHECKS[kind], None)), f"sftkit.testing has no {CHECKS[kind]} for {name}"
        assert f'builtin("{kind}")' in conformance, f"tests/test_conformance.py does not check the built-in {kind}"
        assert examples[name], f"the example plugin does not implement {name}, so make test never installs one"


def test_readme_names_only_real_hooks_and_checks():
    text = README.read_text(encoding="utf-8")
    import sftkit.testing as testing

    text = re.sub(r"register_\w+ is not a sftkit hook", "", text)  # the README's example of a typo
    for hook in set(re.findall(r"\bregister_[a-z_]+\b", text)) - {"register_plugin"}:
        assert hook in hook_specs(), f"README.md mentions {hook}, which is not a hook in sftkit/hookspecs.py"
    for check in set(re.findall(r"\bcheck_[a-z_]+\b", plugin_section(text))):  # io.check_writable_* elsewhere
        assert hasattr(testing, check), f"README.md mentions sftkit.testing.{check}, which does not exist"


def readme_blocks(language: str) -> list[str]:
    section = plugin_section(README.read_text(encoding="utf-8"))
    return re.findall(rf"```{language}\n(.*?)```", section, flags=re.S)


def test_readme_plugin_runs_and_conforms(register_plugin, sftkit_registry):
    from sftkit.testing import check_template

    code = readme_blocks("python")[0]
    assert len(code.strip().splitlines()) <= 20, "the first plugin in the README should stay about ten lines"
    module = types.ModuleType("sftkit_qa")
    exec(compile(code, "README.md", "exec"), module.__dict__)
    status = register_plugin(module, name="qa")
    assert status.components == ["templates:qa"]
    rendered = check_template(sftkit_registry.get("templates", "qa"))
    assert "".join(s.text for s in rendered[0]) == "Question:\nTranslate to French.\n\nGood morning\nAnswer:\nBonjour</s>"


def test_readme_plugin_tests_pass(register_plugin, sftkit_cli, monkeypatch):
    """The README's test file for the plugin passes (its fixtures are sftkit.testing's)."""
    module = types.ModuleType("sftkit_qa")
    exec(compile(readme_blocks("python")[0], "README.md", "exec"), module.__dict__)
    monkeypatch.setitem(sys.modules, "sftkit_qa", module)
    tests = next(block for block in readme_blocks("python") if "def test_" in block)
    namespace: dict = {}
    exec(compile(tests, "README.md", "exec"), namespace)
    namespace["test_qa_conforms"]()
    namespace["test_qa_in_the_cli"](register_plugin, sftkit_cli)


def _readme_block(containing: str) -> types.ModuleType:
    block = next(b for b in readme_blocks("python") if containing in b)
    module = types.ModuleType("readme_block")
    exec(compile(block, "README.md", "exec"), module.__dict__)
    return module


def test_readme_template_with_a_system_option_conforms(tokenizer):
    """The README's USER/ASSISTANT template: markers in context, jinja a function of its option."""
    from sftkit.testing import check_template

    module = _readme_block("def user_assistant(")
    check_template(module.user_assistant, tokenizer=tokenizer)
    rendered = check_template(module.user_assistant, tokenizer=tokenizer, options={"system": 'Be "brief" {x}.'})
    assert "".join(s.text for s in rendered[1]) == 'Be "brief" {x}.\nUSER: Name a primary colour. ASSISTANT: Red.' \
        + tokenizer.eos_token


def test_readme_chrf_metric_conforms():
    """The README's chrF metric passes check_metric (its resampled path equals corpus chrF)."""
    from sftkit.testing import check_metric

    scores = check_metric(_readme_block("def chrf(").chrf)
    assert set(scores) == {"chrf"} and len(scores["chrf"]) == 4


def test_readme_pyproject_declares_the_entry_point():
    import pytest

    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    snippet = next(block for block in readme_blocks("toml") if "entry-points" in block)
    data = tomllib.loads(snippet)
    assert data["project"]["entry-points"]["sftkit"] == {"qa": "sftkit_qa"}
    assert data["tool"]["setuptools"]["py-modules"] == ["sftkit_qa"]


if __name__ == "__main__":
    write()
    print(f"regenerated the hook reference in {README}")
