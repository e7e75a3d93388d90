"""The plugin registry: built-in plugins from a fixed list, third-party ones from entry points.

Each third-party plugin loads inside its own ``try``: a broken plugin is recorded with its
error and named when a user asks for a component that is missing; it never stops the CLI.
"""
from __future__ import annotations

import difflib
import importlib
import inspect
import os
from contextlib import contextmanager
from dataclasses import dataclass, field
from importlib import metadata
from functools import cached_property
from typing import TYPE_CHECKING, Any, Callable, Iterator, Mapping

import pluggy

from sftkit import hookspecs
from sftkit.errors import PluginError, SftkitError, UsageError

if TYPE_CHECKING:
    from sftkit.options import Declared

ENTRY_POINT_GROUP = "sftkit"

# Built-in plugins: ordinary sftkit plugins, loaded from this fixed list.
DEFAULT_PLUGINS = (
    "sftkit.plugins.loaders",
    "sftkit.plugins.templates",
    "sftkit.plugins.masking",
    "sftkit.plugins.validators",
    "sftkit.plugins.metrics",
    "sftkit.plugins.reporters",
    "sftkit.plugins.generators",
)

# How many leading positional arguments sftkit itself passes to a component of each kind;
# every other parameter is a user option.
POSITIONAL_ARGS = {
    "loaders": ("path",),
    "templates": ("example", "context"),
    "masking_strategies": ("segments",),
    "validators": ("context",),
    "metrics": ("predictions", "references"),
    "reporters": ("result", "output_dir"),
    "generators": ("model", "tokenizer", "prompt_ids", "stops", "max_new_tokens"),
}

# Where a user sets the options of each kind: (flag, option prefix, the other place).
OPTION_PLACES = {
    "loaders": ("--loader-option", "", "set it in loader_options: of the spec or the recipe"),
    "templates": ("--template-option", "", "set it in template_options: of the recipe"),
    "masking_strategies": ("--masking-option", "", "set it in masking_options: of the recipe"),
    "validators": ("--validator-option", "{name}.", "set it in the spec's validators:"),
    "metrics": ("--metric-option", "{name}.", ""),
    "reporters": ("", "", ""),
    "generators": ("--generator-option", "", ""),
}

SINGULAR = {
    "loaders": "loader",
    "templates": "template",
    "masking_strategies": "masking strategy",
    "validators": "validator",
    "metrics": "metric",
    "reporters": "reporter",
    "generators": "generator",
}


def debug_enabled() -> bool:
    """True when ``SFTKIT_DEBUG=1``: errors re-raise with their traceback."""
    return os.environ.get("SFTKIT_DEBUG", "") not in ("", "0")


def help_line(obj: Any) -> str:
    """The first line of an object's docstring (or of its class's), or ''."""
    doc = inspect.getdoc(obj) or ""
    if not doc and not inspect.isroutine(obj):
        doc = inspect.getdoc(type(obj)) or ""
    return doc.strip().splitlines()[0] if doc.strip() else ""


@dataclass
class Component:
    """A named callable registered by a plugin."""

    kind: str
    name: str
    func: Callable
    plugin: str
    version: str | None  # None for built-ins
    help: str

    @property
    def builtin(self) -> bool:
        return self.version is None

    def _signature(self) -> inspect.Signature:
        target = self.func if inspect.isroutine(self.func) else getattr(self.func, "__call__")
        return inspect.signature(target)

    @cached_property
    def declared_options(self) -> dict[str, "Declared"]:
        """The options a user may set, each with its declared type and constraints (``sftkit.options``).

        An option annotated ``Annotated[int, Field(ge=1, description=...)]`` (or ``Literal[...]``)
        is checked by value; an unannotated one by the type of its default. A built-in whose
        annotation cannot be read raises (a bug); a third-party one falls back to its defaults.
        """
        from sftkit.options import declarations

        return declarations(self.func, len(POSITIONAL_ARGS[self.kind]), strict=self.builtin)

    def options(self) -> dict[str, Any]:
        """The options a user may set, with their defaults (``inspect.Parameter.empty`` if none)."""
        return {name: declared.default for name, declared in self.declared_options.items()}

    def accepts_any_option(self) -> bool:
        return any(p.kind == p.VAR_KEYWORD for p in self._signature().parameters.values())

    def check_signature(self) -> None:
        """Raise PluginError if the callable cannot take the arguments sftkit passes."""
        needed = POSITIONAL_ARGS[self.kind]
        try:
            sig = self._signature()
        except (TypeError, ValueError) as exc:
            raise PluginError(self._where(f"is not a callable with a signature ({exc})")) from None
        params = list(sig.parameters.values())
        if any(p.kind == p.VAR_POSITIONAL for p in params):
            return
        positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
        if len(positional) < len(needed):
            raise PluginError(
                self._where(
                    f"takes {len(positional)} positional argument(s) but sftkit passes "
                    f"{len(needed)}: ({', '.join(needed)})"
                ),
                hint=f"define it as {self.name}({', '.join(needed)}, **options)",
            )

    def bind(self, options: dict[str, Any] | None = None, *, sources: Mapping[str, str] | None = None) -> Callable:
        """Check every option by name, type and value (before any work); return a callable with them applied.

        ``sources`` names where an option came from (``"the spec data/spec.yaml, key
        validators.quality.num_perm"``) for the message; text from the command line
        (``sftkit.options.CommandLineText``) names its flag itself.
        """
        options = dict(options or {})
        accepted = self.options()
        if not self.accepts_any_option():
            unknown = [k for k in options if k not in accepted]
            if unknown:
                raise UsageError(
                    f"{self.title} has no option {', '.join(repr(u) for u in unknown)}",
                    hint="accepted options: " + (", ".join(accepted) or "none"),
                )
        missing = [k for k, v in accepted.items() if v is inspect.Parameter.empty and k not in options]
        if missing:
            raise UsageError(f"{self.title} needs option(s) {', '.join(missing)}",
                             hint="pass " + "; and ".join(self.how_to_set(k) for k in missing))
        coerced = {k: self.check_option(k, v, (sources or {}).get(k)) for k, v in options.items()}
        component = self

        def bound(*args: Any, **kwargs: Any) -> Any:
            return call_component(component, *args, **{**coerced, **kwargs})

        bound.component = self  # type: ignore[attr-defined]
        bound.options = coerced  # type: ignore[attr-defined]
        bound.__name__ = self.name
        bound.__doc__ = inspect.getdoc(self.func)
        for attr in hookspecs.OPTIONAL_ATTRIBUTES[self.kind]:
            if hasattr(self.func, attr):
                setattr(bound, attr, self.attribute(attr))
        return bound

    @property
    def title(self) -> str:
        """``validator 'quality' (plugin validators)``: how messages name the component."""
        return f"{SINGULAR[self.kind]} {self.name!r} (plugin {self.plugin})"

    def how_to_set(self, option: str) -> str:
        """Where a user sets one option: ``--validator-option quality.num_perm=VALUE or the spec's validators:``."""
        flag, prefix, elsewhere = OPTION_PLACES[self.kind]
        where = f"{flag} {prefix.format(name=self.name)}{option}=VALUE" if flag else "its options"
        return where + (f", or {elsewhere}" if elsewhere else "")

    def check_option(self, option: str, value: Any, source: str | None = None) -> Any:
        """One option's value checked against its declaration and coerced; UsageError (exit 2) when refused."""
        from sftkit.options import CommandLineText, ValueProblem

        declared = self.declared_options.get(option)
        if declared is None:  # taken by **options: the component checks it itself
            return str(value) if isinstance(value, CommandLineText) else value
        try:
            return declared.check(value)
        except ValueProblem as problem:
            if isinstance(value, CommandLineText) and value.flag:
                source = value.flag
            about = f"; {option}: {declared.description.rstrip('.')}" if declared.description else ""
            raise UsageError(f"{self.title}: option {option} {problem}" + (f" (from {source})" if source else ""),
                             hint=f"pass {self.how_to_set(option)}{about}") from None

    def attribute(self, name: str, default: Any = None) -> Any:
        """One of the kind's optional attributes (``hookspecs.OPTIONAL_ATTRIBUTES``), or ``default``.

        Callable attributes are wrapped like the component itself, so a third-party
        ``aggregate`` or ``describe`` that crashes is reported as the plugin's error.
        """
        if name not in hookspecs.OPTIONAL_ATTRIBUTES[self.kind]:
            raise KeyError(f"{name!r} is not an optional attribute of {self.kind}")
        value = getattr(self.func, name, default)
        if callable(value) and not self.builtin:
            component = self

            def guarded(*args: Any, **kwargs: Any) -> Any:
                with blamed_on(component):
                    return value(*args, **kwargs)

            guarded.__name__ = getattr(value, "__name__", name)
            return guarded
        return value

    def _where(self, what: str) -> str:
        return f"{SINGULAR[self.kind]} {self.name!r} from plugin {self.plugin} {what}"

    def failure(self, exc: BaseException) -> PluginError:
        """The PluginError for an unexpected exception raised by this (third-party) component."""
        version = f" {self.version}" if self.version and self.version != "unknown" else ""
        return PluginError(
            f"{SINGULAR[self.kind]} {self.name!r} from plugin {self.plugin}{version} failed: "
            f"{type(exc).__name__}: {exc}",
            hint=f"this is a bug in the plugin {self.plugin!r} (plugins raise sftkit.DataError or UsageError for "
                 f"bad input): rerun with SFTKIT_DEBUG=1 for the traceback and report it to the plugin's "
                 f"authors, or " + (f"leave it out with --skip {self.name}" if self.kind == "validators"
                                    else f"choose another {SINGULAR[self.kind]}"),
        )


def describe(func: Callable, kind: str) -> str:
    """``template 'x' from plugin y`` for a bound component; the kind and name otherwise (for messages)."""
    comp = getattr(func, "component", None)
    if isinstance(comp, Component):
        return comp._where("").rstrip()
    return f"{SINGULAR.get(kind, kind)} {getattr(func, '__name__', kind)!r}"


def call_component(component: Component, *args: Any, **kwargs: Any) -> Any:
    """Call a component. The one error policy, for every kind and every command:

    - ``SftkitError`` (DataError, UsageError, ...) passes through unchanged (exit 2);
    - an unexpected exception from a third-party component becomes a PluginError naming the
      plugin and the component (exit 2);
    - one from a built-in is not wrapped: it is a bug in sftkit (exit 3, "internal error");
    - ``SFTKIT_DEBUG=1`` re-raises the original exception with its traceback.

    A generator returned by the component (a lazy loader or validator) is guarded the same way
    while it is consumed, and so are its callable optional attributes (``Component.attribute``).
    """
    if component.builtin:
        return component.func(*args, **kwargs)
    with blamed_on(component):
        result = component.func(*args, **kwargs)
    if inspect.isgenerator(result):
        return _guarded(component, result)
    return result


@contextmanager
def blamed_on(component: Component) -> Iterator[None]:
    """Turn an unexpected exception inside the block into the component's PluginError."""
    try:
        yield
    except SftkitError:
        raise
    except Exception as exc:
        if debug_enabled():
            raise
        raise component.failure(exc) from exc


def _guarded(component: Component, generator: Any) -> Any:
    with blamed_on(component):
        return (yield from generator)


@dataclass
class PluginStatus:
    """Whether a plugin loaded, and why not."""

    name: str
    version: str | None
    builtin: bool
    ok: bool = True
    error: str | None = None
    components: list[str] = field(default_factory=list)
    package: str | None = None  # the distribution that provides a third-party plugin

    def fail(self, message: str) -> None:
        """Mark the plugin as failed, keeping every problem found (joined with '; ')."""
        self.ok = False
        self.error = message if not self.error else f"{self.error}; {message}"


class Registry:
    """Loads plugins and hands out their components by kind and name."""

    def __init__(self) -> None:
        self.pm = pluggy.PluginManager("sftkit")
        self.pm.add_hookspecs(hookspecs)
        self.plugins: dict[str, PluginStatus] = {}
        self._components: dict[str, dict[str, Component]] = {kind: {} for kind in hookspecs.KINDS}
        self.clashes: dict[tuple[str, str], list[str]] = {}
        self.left_out: list[str] = []  # installed plugins that SFTKIT_LOAD_PLUGINS did not allow

    # -- loading ----------------------------------------------------------------------------
    def load_builtins(self) -> None:
        """Load the built-in plugins; a failure here is a bug in sftkit and raises."""
        for module_name in DEFAULT_PLUGINS:
            module = importlib.import_module(module_name)
            self.add_plugin(module, name=module_name.rsplit(".", 1)[-1], version=None, builtin=True)

    def load_entry_points(self, allow: list[str] | None = None) -> None:
        """Load third-party plugins from the ``sftkit`` entry-point group, each in its own try."""
        if allow is None:
            env = os.environ.get("SFTKIT_LOAD_PLUGINS")
            if env is not None:
                allow = [name.strip() for name in env.split(",") if name.strip()]
        for ep in metadata.entry_points(group=ENTRY_POINT_GROUP):
            if allow is not None and ep.name not in allow:
                self.left_out.append(ep.name)
                continue
            dist = getattr(ep, "dist", None)
            version = getattr(dist, "version", None) or "unknown"
            package = getattr(dist, "name", None)
            try:
                plugin = ep.load()
            except (Exception, SystemExit) as exc:  # a broken plugin must not take sftkit down (even sys.exit)
                if debug_enabled():
                    raise
                status = PluginStatus(ep.name, version, False, package=package)
                status.fail(f"importing {ep.value} failed: {type(exc).__name__}: {exc}")
                self.plugins[ep.name] = status
                continue
            self.add_plugin(plugin, name=ep.name, version=version, builtin=False).package = package

    def add_plugin(self, plugin: Any, *, name: str, version: str | None, builtin: bool) -> PluginStatus:
        """Register one plugin object or module and collect its components.

        A third-party plugin's mistakes (a hook with a wrong name or argument, a component with
        a wrong signature, a duplicate name, a hook that raises) are recorded on its status;
        its other components still load. Built-ins raise, and so does ``SFTKIT_DEBUG=1``.
        """
        status = PluginStatus(name, version, builtin)
        self.plugins[name] = status
        try:
            self.pm.register(plugin, name=name)
        except Exception as exc:
            if builtin or debug_enabled():
                raise
            hint = ("a hook function takes the argument names of its spec: "
                    "register_<kind>(register)" if isinstance(exc, pluggy.PluginValidationError) else "")
            status.fail(f"{type(exc).__name__}: {exc}" + (f" (hint: {hint})" if hint else ""))
            return status
        if not builtin:
            self._check_hook_names(plugin, status)
        for kind in hookspecs.KINDS:
            hook = getattr(self.pm.hook, f"register_{kind}")
            for impl in hook.get_hookimpls():
                if impl.plugin_name != name:
                    continue
                try:
                    impl.function(self._register_function(kind, status))
                except Exception as exc:
                    if builtin or debug_enabled():
                        raise
                    status.fail(f"register_{kind} raised {type(exc).__name__}: {exc}")
        if not builtin and status.ok and not status.components:
            status.fail("it registered no components (hint: decorate each hook with @sftkit.hookimpl, name it "
                        "register_<kind>, and call register(component) inside it)")
        return status

    def _check_hook_names(self, plugin: Any, status: PluginStatus) -> None:
        """Record hook implementations whose name is not a sftkit hook (a typo such as register_template)."""
        known = [name for name, caller in vars(self.pm.hook).items() if getattr(caller, "spec", None) is not None]
        for attr in dir(plugin):
            try:
                if attr in known or self.pm.parse_hookimpl_opts(plugin, attr) is None:
                    continue
            except Exception:  # an attribute that cannot be read is not a hook
                continue
            close = difflib.get_close_matches(attr, known, n=1)
            status.fail(f"{attr} is not a sftkit hook (hint: "
                        + (f"did you mean {close[0]}?" if close else "hooks are " + ", ".join(sorted(known))) + ")")

    def _register_function(self, kind: str, status: PluginStatus) -> Callable:
        def register(component: Callable, name: str | None = None) -> None:
            comp_name = name or getattr(component, "__name__", None) or type(component).__name__
            comp = Component(kind, comp_name, component, status.name, status.version, help_line(component))
            try:
                if not callable(component):
                    raise PluginError(comp._where("is not callable"),
                                      hint="register a function or an object with __call__")
                comp.check_signature()
            except PluginError as exc:
                if status.builtin or debug_enabled():
                    raise
                status.fail(str(exc))
                return
            existing = self._components[kind].get(comp_name)
            if existing is not None and existing.plugin == status.name:
                if status.builtin:
                    raise PluginError(f"built-in plugin {status.name} registers {SINGULAR[kind]} {comp_name!r} twice")
                status.fail(f"it registers {SINGULAR[kind]} {comp_name!r} twice (hint: give one another name "
                            f"with register(component, name=...))")
                return
            if existing is not None:
                owners = self.clashes.setdefault((kind, comp_name), [existing.plugin])
                owners.append(status.name)
                status.fail(
                    f"{SINGULAR[kind]} {comp_name!r} is registered by both {' and '.join(owners)} (hint: rename it "
                    f"in {status.name}, uninstall one of the plugins, or leave one out with SFTKIT_LOAD_PLUGINS)"
                )
                return
            self._components[kind][comp_name] = comp
            status.components.append(f"{kind}:{comp_name}")

        return register

    # -- lookup -----------------------------------------------------------------------------
    def components(self, kind: str) -> dict[str, Component]:
        """All components of a kind, by name."""
        return dict(self._components[kind])

    def get(self, kind: str, name: str) -> Component:
        """The component ``name`` of ``kind``, or a UsageError saying what exists and what failed."""
        if (kind, name) in self.clashes:
            owners = " and ".join(self.clashes[(kind, name)])
            raise PluginError(
                f"{SINGULAR[kind]} {name!r} is registered by more than one plugin: {owners}",
                hint="uninstall one of them, or limit third-party plugins with SFTKIT_LOAD_PLUGINS",
            )
        comps = self._components[kind]
        if name in comps:
            return comps[name]
        message = f"unknown {SINGULAR[kind]} {name!r}; available: {', '.join(sorted(comps)) or 'none'}"
        close = difflib.get_close_matches(name, list(comps), n=1)
        hint = f"did you mean {close[0]!r}?" if close else None
        failed = [p for p in self.plugins.values() if not p.ok]
        if failed:
            broken = "; ".join(f"{p.name}: {p.error}" for p in failed)
            message += f"\n  plugins that failed to load (one may provide it): {broken}"
        if self.left_out:
            message += f"\n  installed plugins left out by SFTKIT_LOAD_PLUGINS: {', '.join(self.left_out)}"
        raise UsageError(message, hint=hint)

    def resolve(self, kind: str, name: str, options: dict[str, Any] | None = None, *,
                sources: Mapping[str, str] | None = None) -> Callable:
        """Look up a component and bind the user's options to it (unknown options and bad values are rejected)."""
        return self.get(kind, name).bind(options, sources=sources)

    def default_name(self, kind: str) -> str:
        """The component of ``kind`` that declares ``default = True`` (e.g. the masking strategy)."""
        found = [name for name, comp in self._components[kind].items() if comp.attribute("default", False) is True]
        if len(found) != 1:
            raise UsageError(f"{len(found)} {kind.replace('_', ' ')} declare themselves the default"
                             + (f" ({', '.join(found)})" if found else ""),
                             hint=f"choose one explicitly (e.g. --{SINGULAR[kind].split()[0]} NAME)")
        return found[0]

    def defaults_for_task(self, kind: str, task: str) -> list[str]:
        """Components whose ``default_for`` names ``task``, in their declared order (default metrics)."""
        ranked = []
        for name, comp in self._components[kind].items():
            position = (comp.attribute("default_for") or {}).get(task)
            if position is not None:
                ranked.append((position, name))
        return [name for _, name in sorted(ranked)]


_REGISTRY: Registry | None = None


def get_registry(*, reload: bool = False) -> Registry:
    """The process-wide registry: built-ins plus allowed third-party plugins, loaded once."""
    global _REGISTRY
    if _REGISTRY is None or reload:
        registry = Registry()
        registry.load_builtins()
        registry.load_entry_points()
        _REGISTRY = registry
    return _REGISTRY


def set_registry(registry: Registry | None) -> None:
    """Replace the process-wide registry (tests use this for a fresh one)."""
    global _REGISTRY
    _REGISTRY = registry
