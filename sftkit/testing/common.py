"""Shared helpers of the conformance checks: the problem list, the common checks of every kind,
binding a component with options, and calling it with its exceptions turned into problems."""
from __future__ import annotations

import inspect
import math
import numbers
import re
from typing import Any, Callable

from sftkit.errors import SftkitError
from sftkit.registry import SINGULAR, Component, get_registry

# The conformance check of each kind (the README hook reference and tests/test_docs.py use it).
CHECKS = {
    "loaders": "check_loader",
    "templates": "check_template",
    "masking_strategies": "check_masking_strategy",
    "validators": "check_validator",
    "metrics": "check_metric",
    "reporters": "check_reporter",
    "generators": "check_generator",
}
NAME_PATTERN = re.compile(r"^[A-Za-z][A-Za-z0-9_.-]*$")
CODE_PATTERN = re.compile(r"^[a-z][a-z0-9_]*$")
OPTION_TYPES = (str, int, float, bool, type(None), list, tuple)


class ConformanceError(AssertionError):
    """A component breaks the contract of its kind; the message lists every problem."""


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


class Problems:
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


def check_common(component: Component, problems: Problems) -> None:
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


def start_check(kind: str, component: Any, options: dict | None) -> tuple[Component, Problems, Callable]:
    """The component, its problem list (common checks done) and the callable bound with ``options``.

    Raises ConformanceError at once when the options cannot be bound (nothing can be called).
    """
    component = as_component(kind, component)
    problems = Problems(component)
    check_common(component, problems)
    try:
        bound = component.bind(options or {})
    except SftkitError as exc:
        problems.add(f"cannot be bound with options {options or {}}: {exc}")
        problems.check()
    return component, problems, bound


def call(problems: Problems, what: str, func: Callable, *args: Any) -> tuple[bool, Any]:
    """Call ``func``; an exception becomes a problem (with its type), not a crash of the check."""
    try:
        return True, func(*args)
    except Exception as exc:  # the point of the check: report it with the input that caused it
        exc = unwrap(exc)
        problems.add(f"{what} raised {type(exc).__name__}: {exc}")
    return False, None


def unwrap(exc: BaseException) -> BaseException:
    """The plugin's own exception inside the PluginError that ``call_component`` raised for it."""
    cause = exc.__cause__
    if isinstance(exc, SftkitError) and cause is not None and not isinstance(cause, SftkitError):
        return cause
    return exc


def finite_number(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(float(value))
