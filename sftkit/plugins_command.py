"""``sftkit plugins``: every component and every plugin's load status.

``--json`` gives each component's option defaults as JSON and each option's JSON Schema
(``option_schemas``, from its declaration: see ``sftkit.options``).
"""
from __future__ import annotations

import json
import sys

import click

from sftkit.hookspecs import KINDS


def plugin_report(registry) -> dict:
    """The registry as plain data (the ``--json`` output)."""
    from sftkit.options import EMPTY, json_value

    components = []
    for kind in KINDS:
        for name, comp in sorted(registry.components(kind).items()):
            declared = comp.declared_options
            components.append({
                "kind": kind, "name": name, "plugin": comp.plugin,
                "version": comp.version or "built-in", "help": comp.help,
                # defaults as JSON (a tuple as a list; None for a required option)
                "options": {k: None if d.default is EMPTY else json_value(d.default) for k, d in declared.items()},
                # each option's JSON Schema (pydantic's): type, allowed values, description, default
                "option_schemas": {k: d.schema for k, d in declared.items()},
            })
    plugins = [
        {"name": p.name, "version": p.version or "built-in", "builtin": p.builtin, "ok": p.ok, "error": p.error,
         "components": p.components, "package": getattr(p, "package", None)}
        for p in registry.plugins.values()
    ]
    return {"components": components, "plugins": plugins,
            "clashes": [{"kind": k, "name": n, "plugins": v} for (k, n), v in registry.clashes.items()],
            "left_out": list(getattr(registry, "left_out", []))}


@click.command("plugins")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of tables.")
def command(as_json: bool) -> None:
    """List templates, masking strategies, validators, metrics, loaders, reporters and generators, and plugin status.

    Exits 1 if any plugin failed to load.
    """
    from rich.table import Table

    from sftkit.console import console, plain
    from sftkit.registry import get_registry

    registry = get_registry()
    report = plugin_report(registry)
    failed = [p for p in report["plugins"] if not p["ok"]]
    if as_json:
        click.echo(json.dumps(report, indent=2, default=str))
    else:
        table = Table(title="sftkit components", show_lines=False)
        for header in ("kind", "name", "plugin", "version", "help"):
            table.add_column(header)
        for comp in report["components"]:
            table.add_row(plain(comp["kind"]), plain(comp["name"], "bold"), plain(comp["plugin"]),
                          plain(comp["version"]), plain(comp["help"]))
        console.print(table)
        status = Table(title="plugins")
        for header in ("plugin", "version", "status"):
            status.add_column(header)
        for p in report["plugins"]:
            state = plain("ok", "green") if p["ok"] else plain(f"FAILED: {p['error']}", "bold red")
            status.add_row(plain(p["name"]), plain(p["version"]), state)
        console.print(status)
        if report["left_out"]:
            console.print(plain(f"installed but left out by SFTKIT_LOAD_PLUGINS: {', '.join(report['left_out'])}",
                                "yellow"))
    if failed:
        from sftkit.console import err_console, plain

        names = ", ".join(p["name"] for p in failed)
        err_console.print(plain(f"{len(failed)} plugin(s) failed to load: {names}", "bold red"))
        err_console.print(plain("  hint: fix or reinstall the plugin (or pip uninstall it), or leave it out with "
                                "SFTKIT_LOAD_PLUGINS=<the plugins to load>; SFTKIT_DEBUG=1 shows the traceback",
                                "yellow"))
        sys.exit(1)
