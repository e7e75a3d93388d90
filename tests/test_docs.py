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


def write() -> None:
    """Regenerate the hook reference inside README.md."""
    text = README.read_text(encoding="utf-8")
    README.write_text(text.replace(readme_reference(text), hook_reference()), encoding="utf-8")


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
    for check in set(re.findall(r"\bcheck_[a-z_]+\b", text)):
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
