"""The plugin registry: broken plugins, name clashes, the allow-list, debug mode, plugin mistakes.

Third-party plugins are real distributions here: a ``*.dist-info`` folder with an
``entry_points.txt`` and a module, put on ``sys.path`` for one test, so discovery goes through
``importlib.metadata`` exactly as for a pip-installed plugin.
"""
from __future__ import annotations

import sys
import textwrap
from pathlib import Path

import pytest

from sftkit.errors import DataError, PluginError, UsageError
from sftkit.registry import Registry, call_component, get_registry, set_registry
from sftkit.testing import run_cli

pytest_plugins = ["pytester"]

FIXTURE = Path(__file__).parent / "data" / "fixtures" / "alpaca_small.json"

GOOD = '''
from sftkit import DataError, Segment, hookimpl

def shout(example, context):
    """Everything in capitals."""
    return [Segment(example.prompt_text().upper(), "user", "content", 0),
            Segment(example.output.upper(), "assistant", "content", 1),
            Segment(context.eos_token, "assistant", "end", 1)]

def boom(example, context, where: str = "render"):
    """Raises a KeyError: a bug in the plugin."""
    raise KeyError(where)

def picky(example, context):
    """Raises DataError: the plugin's way of saying the data is bad."""
    raise DataError("row has no answer", row=example.row)

def lazy_loader(path):
    """Yields one record, then fails."""
    yield {"instruction": "a", "output": "b"}
    raise ValueError("bad byte")

@hookimpl
def register_templates(register):
    register(shout)
    register(boom)
    register(picky)

@hookimpl
def register_loaders(register):
    register(lazy_loader)
'''


@pytest.fixture
def site(tmp_path, monkeypatch):
    """``site(dist, version, {entry point: module source})``: install a fake plugin distribution."""
    root = tmp_path / "site"
    root.mkdir()
    monkeypatch.syspath_prepend(str(root))
    modules: list[str] = []

    def install(dist: str, version: str, plugins: dict[str, str]) -> None:
        info = root / f"{dist.replace('-', '_')}-{version}.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n")
        lines = ["[sftkit]"]
        for name, source in plugins.items():
            module = f"{dist.replace('-', '_')}_{name}"
            (root / f"{module}.py").write_text(textwrap.dedent(source))
            lines.append(f"{name} = {module}")
            modules.append(module)
        (info / "entry_points.txt").write_text("\n".join(lines) + "\n")

    yield install
    for module in modules:
        sys.modules.pop(module, None)


def load(monkeypatch, allow: str) -> Registry:
    """A registry of the built-ins plus the third-party plugins named in ``allow``."""
    monkeypatch.setenv("SFTKIT_LOAD_PLUGINS", allow)
    registry = Registry()
    registry.load_builtins()
    registry.load_entry_points()
    return registry


@pytest.fixture
def fresh_global():
    """Let the CLI build its own registry (from the environment) and restore the old one after."""
    import sftkit.registry as module

    previous = module._REGISTRY
    set_registry(None)
    yield
    set_registry(previous)


# -- broken plugins, the allow-list, debug mode ------------------------------------------------

def test_broken_plugin_is_recorded_and_named_when_a_component_is_missing(site, monkeypatch):
    site("sftkit-broken", "1.2.3", {"broken": "raise ImportError('needs libfoo')\n"})
    site("sftkit-good", "0.4.0", {"good": GOOD})
    site("sftkit-exits", "0.1", {"exits": "import sys\nsys.exit(3)\n"})
    assert "SystemExit: 3" in load(monkeypatch, "exits").plugins["exits"].error  # sys.exit at import: recorded
    registry = load(monkeypatch, "broken,good")
    broken = registry.plugins["broken"]
    assert (broken.ok, broken.version, broken.package) == (False, "1.2.3", "sftkit-broken")
    assert "ImportError: needs libfoo" in broken.error
    assert registry.plugins["good"].ok
    assert registry.get("templates", "shout").version == "0.4.0"
    with pytest.raises(UsageError) as caught:
        registry.get("templates", "llama9")
    assert "plugins that failed to load (one may provide it): broken: importing" in str(caught.value)
    assert "needs libfoo" in str(caught.value)


def test_allow_list_limits_third_party_plugins(site, monkeypatch):
    site("sftkit-broken", "1.2.3", {"broken": "raise ImportError('needs libfoo')\n"})
    site("sftkit-good", "0.4.0", {"good": GOOD})
    assert "broken" not in load(monkeypatch, "good").plugins
    with pytest.raises(UsageError, match="installed plugins left out by SFTKIT_LOAD_PLUGINS: .*broken"):
        load(monkeypatch, "good").get("templates", "llama9")
    assert "shout" in load(monkeypatch, "good").components("templates")
    nothing = load(monkeypatch, "")
    assert not {"good", "broken"} & set(nothing.plugins)
    assert "alpaca" in nothing.components("templates")  # built-ins always load
    monkeypatch.delenv("SFTKIT_LOAD_PLUGINS")
    everything = Registry()
    everything.load_entry_points()
    assert {"good", "broken"} <= set(everything.plugins)


def test_debug_reraises_a_broken_plugin(site, monkeypatch):
    site("sftkit-broken", "1.2.3", {"broken": "raise ImportError('needs libfoo')\n"})
    monkeypatch.setenv("SFTKIT_DEBUG", "1")
    with pytest.raises(ImportError, match="needs libfoo"):
        load(monkeypatch, "broken")


def test_cli_with_a_broken_plugin(site, monkeypatch, fresh_global):
    site("sftkit-broken", "1.2.3", {"broken": "raise ImportError('needs libfoo')\n"})
    site("sftkit-good", "0.4.0", {"good": GOOD})
    env = {"SFTKIT_LOAD_PLUGINS": "broken,good"}
    assert run_cli("--help", env=env).exit_code == 0
    result = run_cli("plugins", "--json", env=env)
    assert result.exit_code == 1
    data = result.json()
    plugins = {p["name"]: p for p in data["plugins"]}
    assert plugins["broken"]["ok"] is False and "needs libfoo" in plugins["broken"]["error"]
    assert plugins["good"]["ok"] is True and plugins["good"]["package"] == "sftkit-good"
    shout = next(c for c in data["components"] if c["name"] == "shout")
    assert shout == {"kind": "templates", "name": "shout", "plugin": "good", "version": "0.4.0",
                     "help": "Everything in capitals.", "options": {}, "option_schemas": {}}
    alpaca = next(c for c in data["components"] if c["name"] == "alpaca")
    assert (alpaca["plugin"], alpaca["version"]) == ("templates", "built-in")
    assert "failed to load: broken" in result.stderr and "SFTKIT_LOAD_PLUGINS" in result.stderr
    set_registry(None)
    table = run_cli("plugins", env=env)
    assert table.exit_code == 1 and "FAILED" in table.stdout and "needs libfoo" in table.stdout
    set_registry(None)
    assert run_cli("plugins", "--json", env={"SFTKIT_LOAD_PLUGINS": "good"}).exit_code == 0


def test_cli_debug_reraises(site, monkeypatch, fresh_global):
    site("sftkit-broken", "1.2.3", {"broken": "raise ImportError('needs libfoo')\n"})
    monkeypatch.setenv("SFTKIT_LOAD_PLUGINS", "broken")
    monkeypatch.setenv("SFTKIT_DEBUG", "1")
    from sftkit.cli import main

    with pytest.raises(ImportError, match="needs libfoo"):
        main(["plugins", "--json"])


# -- plugin mistakes: each named with the plugin, the component and what to do ------------------

def test_name_clash_names_both_plugins(site, monkeypatch):
    site("sftkit-good", "0.4.0", {"good": GOOD})
    site("sftkit-copy", "2.0", {"copy": GOOD})
    registry = load(monkeypatch, "good,copy")
    assert not registry.plugins["copy"].ok
    assert "template 'shout' is registered by both good and copy" in registry.plugins["copy"].error
    assert "SFTKIT_LOAD_PLUGINS" in registry.plugins["copy"].error
    with pytest.raises(PluginError, match="template 'shout' is registered by more than one plugin: good and copy"):
        registry.get("templates", "shout")
    assert "shout" in load(monkeypatch, "good").components("templates")  # the allow-list resolves it


def test_clash_with_a_builtin_and_a_duplicate_within_a_plugin(register_plugin, sftkit_registry):
    class Clash:
        @staticmethod
        def alpaca(example, context):
            """My alpaca."""
            return []

        from sftkit import hookimpl

        @hookimpl
        def register_templates(self, register):
            register(self.alpaca)
            register(self.alpaca, name="twice")
            register(self.alpaca, name="twice")

    status = register_plugin(Clash(), name="clash", strict=False)
    assert "template 'alpaca' is registered by both templates and clash" in status.error
    assert "registers template 'twice' twice" in status.error and "register(component, name=...)" in status.error
    assert "twice" in sftkit_registry.components("templates")  # the first registration stands
    with pytest.raises(PluginError, match="templates and clash"):
        sftkit_registry.get("templates", "alpaca")


def test_wrong_signature_names_plugin_and_component_and_the_fix(register_plugin, sftkit_registry):
    from sftkit import hookimpl

    class Plugin:
        @staticmethod
        def one_arg(example):
            """Forgot the context."""

        @staticmethod
        def fine(segments):
            """Trains everything."""
            return [1.0] * len(segments)

        @hookimpl
        def register_templates(self, register):
            register(self.one_arg)
            register("not a function", name="text")

        @hookimpl
        def register_masking_strategies(self, register):
            register(self.fine)

    status = register_plugin(Plugin(), name="sig", strict=False)
    assert not status.ok
    assert ("template 'one_arg' from plugin sig takes 1 positional argument(s) but sftkit passes 2: "
            "(example, context)") in status.error
    assert "define it as one_arg(example, context, **options)" in status.error
    assert "template 'text' from plugin sig is not callable" in status.error
    assert status.components == ["masking_strategies:fine"]  # the rest of the plugin still loads
    assert "one_arg" not in sftkit_registry.components("templates")


def test_hook_mistakes(register_plugin):
    from sftkit import hookimpl

    class Typo:
        @hookimpl
        def register_template(self, register):
            pass

    class WrongArgument:
        @hookimpl
        def register_templates(self, reg):
            pass

    class Empty:
        @hookimpl
        def register_templates(self, register):
            pass

    typo = register_plugin(Typo(), name="typo", strict=False)
    assert "register_template is not a sftkit hook (hint: did you mean register_templates?)" in typo.error
    wrong = register_plugin(WrongArgument(), name="wrongarg", strict=False)
    assert "PluginValidationError" in wrong.error and "register_<kind>(register)" in wrong.error
    empty = register_plugin(Empty(), name="empty", strict=False)
    assert "registered no components" in empty.error and "@sftkit.hookimpl" in empty.error
    with pytest.raises(AssertionError, match="plugin empty2 failed to register: it registered no components"):
        register_plugin(Empty(), name="empty2")


def test_a_hook_that_raises_is_recorded(register_plugin):
    from sftkit import hookimpl

    class Raises:
        @hookimpl
        def register_metrics(self, register):
            raise RuntimeError("config file missing")

    status = register_plugin(Raises(), name="raises", strict=False)
    assert status.error.startswith("register_metrics raised RuntimeError: config file missing")


# -- a component that raises at run time -------------------------------------------------------

def test_runtime_error_becomes_plugin_error_naming_plugin_and_component(site, monkeypatch):
    site("sftkit-good", "0.4.0", {"good": GOOD})
    registry = load(monkeypatch, "good")
    from sftkit import Example, RenderContext

    example = Example(instruction="a", output="b", row=7)
    boom = registry.resolve("templates", "boom", {"where": "here"})
    with pytest.raises(PluginError) as caught:
        boom(example, RenderContext())
    message = str(caught.value)
    assert "template 'boom' from plugin good 0.4.0 failed: KeyError: 'here'" in message
    assert "SFTKIT_DEBUG=1" in message and "report it to the plugin's authors" in message
    with pytest.raises(DataError, match="row 7: row has no answer"):  # SftkitError passes through unchanged
        registry.resolve("templates", "picky")(example, RenderContext())
    records = registry.resolve("loaders", "lazy_loader")(Path("x.txt"))
    assert next(records) == {"instruction": "a", "output": "b"}
    with pytest.raises(PluginError, match="loader 'lazy_loader' from plugin good 0.4.0 failed: ValueError: bad byte"):
        next(records)
    monkeypatch.setenv("SFTKIT_DEBUG", "1")
    with pytest.raises(KeyError):
        boom(example, RenderContext())
    with pytest.raises(KeyError):
        call_component(registry.get("templates", "boom"), example, RenderContext())


def test_builtin_errors_are_not_wrapped(sftkit_registry):
    bound = sftkit_registry.resolve("masking_strategies", "full")
    with pytest.raises(TypeError):  # a built-in bug is an internal error (exit 3), not a plugin's
        bound(None)


def test_runtime_error_through_the_cli(site, monkeypatch, fresh_global):
    site("sftkit-good", "0.4.0", {"good": GOOD})
    env = {"SFTKIT_LOAD_PLUGINS": "good"}
    result = run_cli("preview", FIXTURE, "--template", "boom", "-n", "1", env=env)
    assert result.exit_code == 2
    assert "template 'boom' from plugin good 0.4.0 failed: KeyError" in result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    with pytest.raises(KeyError, match="render"):  # SFTKIT_DEBUG=1: the plugin's own exception, traceback and all
        run_cli("preview", FIXTURE, "--template", "boom", "-n", "1", env={**env, "SFTKIT_DEBUG": "1"})
    shown = run_cli("preview", FIXTURE, "--template", "shout", "-n", "1", "--format", "json", env=env)
    assert shown.exit_code == 0, shown.stderr
    tokens = shown.json()["examples"][0]["tokens"]
    trained = "".join(t["text"] for t in tokens if t["trained"])
    assert trained.startswith("PARIS IS THE CAPITAL OF FRANCE.")  # the plugin's rendering, masked by sftkit
    assert "".join(t["text"] for t in tokens if not t["trained"]) == "NAME THE CAPITAL OF FRANCE."


# -- options -----------------------------------------------------------------------------------

def test_unknown_options_are_rejected_naming_component_and_accepted_options():
    registry = get_registry()
    with pytest.raises(UsageError) as caught:
        registry.resolve("masking_strategies", "prompt_weighted", {"bogus": "1", "prompt_weigth": "0.2"})
    assert "masking strategy 'prompt_weighted' (plugin masking) has no option 'bogus', 'prompt_weigth'" in str(
        caught.value)
    assert caught.value.hint == "accepted options: prompt_weight"
    with pytest.raises(UsageError) as caught:
        registry.resolve("templates", "alpaca", {"style": "x"})
    assert caught.value.hint == "accepted options: none"


def test_unknown_option_through_the_cli_exits_2_before_any_work(run_cli):
    result = run_cli("preview", "does-not-exist.json", "--masking", "prompt_weighted",
                     "--masking-option", "bogus=1")
    assert result.exit_code == 2
    assert "masking strategy 'prompt_weighted' (plugin masking) has no option 'bogus'" in result.stderr
    assert "accepted options: prompt_weight" in result.stderr
    assert "does-not-exist" not in result.stderr  # rejected before the file is even opened


def test_option_values_are_coerced_to_the_default_type():
    registry = get_registry()
    assert registry.resolve("masking_strategies", "prompt_weighted", {"prompt_weight": "0.25"}).options == {
        "prompt_weight": 0.25}
    with pytest.raises(UsageError, match="option prompt_weight must be a number from 0 to 1, got 'heavy'"):
        registry.resolve("masking_strategies", "prompt_weighted", {"prompt_weight": "heavy"})


def test_unknown_component_suggests_the_closest_name():
    with pytest.raises(UsageError) as caught:
        get_registry().get("templates", "alpacca")
    assert "unknown template 'alpacca'; available:" in str(caught.value) and caught.value.hint == (
        "did you mean 'alpaca'?")


def test_wrong_return_types_name_the_plugin(register_plugin, sftkit_registry):
    from sftkit import Example, hookimpl
    from sftkit.pipeline import Encoder

    class Sloppy:
        @staticmethod
        def text_template(example, context):
            """Returns a string instead of segments."""
            return example.output

        @staticmethod
        def nothing(segments):
            """Forgets to return."""

        @hookimpl
        def register_templates(self, register):
            register(self.text_template)

        @hookimpl
        def register_masking_strategies(self, register):
            register(self.nothing)

    register_plugin(Sloppy(), name="sloppy")
    example = Example(instruction="a", output="b")
    with pytest.raises(PluginError, match="template 'text_template' from plugin sloppy returned str, expected a list"):
        Encoder.build(template="text_template", registry=sftkit_registry).segments(example)
    encoder = Encoder.build(template="alpaca", masking="nothing", registry=sftkit_registry)
    with pytest.raises(PluginError, match="masking strategy 'nothing' from plugin sloppy returned NoneType, expected"):
        encoder.weights(encoder.segments(example))


def test_a_deprecated_hook_warns_through_pluggy(sftkit_registry):
    """The hook evolution policy's mechanism: a spec marked warn_on_impl warns each implementing plugin."""
    from sftkit import hookimpl
    from sftkit.hookspecs import hookspec

    class OldSpecs:
        @hookspec(warn_on_impl=DeprecationWarning("register_old_things is deprecated: use register_templates"))
        def register_old_things(self, register):
            """A hook due for removal."""

        @hookspec(warn_on_impl_args={"legacy": DeprecationWarning("the legacy argument goes in 0.3")})
        def register_with_args(self, register, legacy):
            """A hook whose argument is due for removal."""

    class Plugin:
        @hookimpl
        def register_old_things(self, register):
            pass

        @hookimpl
        def register_with_args(self, register, legacy):
            pass

        @hookimpl
        def register_templates(self, register):
            register(lambda example, context: [], name="noop")

    sftkit_registry.pm.add_hookspecs(OldSpecs)
    with pytest.warns(DeprecationWarning) as warned:
        status = sftkit_registry.add_plugin(Plugin(), name="old", version="1", builtin=False)
    assert {str(w.message) for w in warned} >= {"register_old_things is deprecated: use register_templates",
                                                 "the legacy argument goes in 0.3"}
    assert status.ok, status.error  # a deprecated hook still works until it is removed


def test_a_required_option_is_asked_for_with_the_right_flag(register_plugin, sftkit_registry):
    from sftkit import hookimpl

    class Plugin:
        @staticmethod
        def needs_words(context, words):
            """A validator with a required option."""
            return []

        @hookimpl
        def register_validators(self, register):
            register(self.needs_words)

    register_plugin(Plugin(), name="req")
    with pytest.raises(UsageError) as caught:
        sftkit_registry.resolve("validators", "needs_words")
    assert str(caught.value) == ("validator 'needs_words' (plugin req) needs option(s) words\n"
                                 "  hint: pass --validator-option needs_words.words=VALUE, or set it in the spec's "
                                 "validators:")
    assert sftkit_registry.resolve("validators", "needs_words", {"words": "a,b"}).options == {"words": "a,b"}



def test_fixtures_come_from_the_pytest11_entry_point(pytester):
    """A plugin author's test file uses sftkit's fixtures with no import and no conftest."""
    pytester.makepyfile(test_author="""
        import sftkit.registry

        def test_fresh(sftkit_registry, register_plugin, sftkit_cli):
            assert sftkit.registry.get_registry() is sftkit_registry
            assert "alpaca" in sftkit_registry.components("templates")

            class Empty:
                pass

            status = register_plugin(Empty(), name="empty", strict=False)
            assert not status.ok and "registered no components" in status.error
            result = sftkit_cli("plugins", "--json")
            assert result.exit_code == 1 and any(p["name"] == "empty" for p in result.json()["plugins"])

        def test_restored_after_the_test():
            assert "empty" not in sftkit.registry.get_registry().plugins
    """)
    result = pytester.runpytest_inprocess("-q", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=2)
