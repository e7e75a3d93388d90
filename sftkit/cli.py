"""The ``sftkit`` command line: validate | preview | train | eval | chat | export | plugins.

Commands live in their own modules and are imported only when used, so ``sftkit --help``
stays fast and works even when a plugin is broken. Errors a user can cause print one message
and exit 2; ``SFTKIT_DEBUG=1`` shows the traceback instead. Other libraries' progress bars and
warnings are silenced (``sftkit.quiet``); ``sftkit -v`` or ``SFTKIT_DEBUG=1`` shows them.
"""
from __future__ import annotations

import functools
import importlib
import io
import sys
from typing import Any, Callable

import click

from sftkit import __version__
from sftkit.errors import ENVIRONMENT_ERRNOS, SftkitError, UsageError, os_error_in, os_hint, os_reason

# command name -> "module:attribute" of a click command
COMMANDS = {
    "validate": "sftkit.validate:command",
    "train": "sftkit.train.command:command",
    "eval": "sftkit.eval.command:command",
    "chat": "sftkit.chat:command",
    "export": "sftkit.export:command",
    "preview": "sftkit.preview:command",
    "plugins": "sftkit.plugins_command:command",
}

EXIT_INTERNAL = 3



class LazyGroup(click.Group):
    """A click group that imports a command's module only when it is needed."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return [name for name in COMMANDS if _module_exists(COMMANDS[name])]

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        target = COMMANDS.get(name)
        if target is None or not _module_exists(target):
            return None
        module_name, attr = target.split(":")
        return getattr(importlib.import_module(module_name), attr)


def _module_exists(target: str) -> bool:
    return importlib.util.find_spec(target.split(":")[0]) is not None


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="sftkit")
@click.option("-v", "--verbose", is_flag=True,
              help="Show other libraries' progress bars, log lines and warnings (hidden by default; SFTKIT_DEBUG=1 "
                   "shows them too).")
def cli(verbose: bool) -> None:
    """sftkit: validate, train and evaluate instruction-tuned language models.

    \b
    sftkit validate DATA   pre-flight check of a dataset (exit 1 on issues)
    sftkit preview DATA    see exactly which tokens train
    sftkit train ...       LoRA or full fine-tuning (transformers, PEFT, accelerate)
    sftkit eval ...        generation + metrics, base versus tuned
    sftkit chat RUN        talk to a model or run (--compare BASE, --prompt TEXT)
    sftkit export RUN OUT  a run as a plain transformers folder (LoRA merged)
    sftkit plugins         installed templates, masking strategies, validators, ...
    """
    from sftkit.quiet import quiet_libraries

    quiet_libraries(verbose)


# -- options shared by the data commands -------------------------------------------------------

def parse_key_values(items: tuple[str, ...] | list[str], flag: str) -> dict[str, str]:
    """``("a=1", "b=x")`` -> ``{"a": "1", "b": "x"}``; a clear error for anything else.

    The values are ``CommandLineText``: the components that take them parse them as flags
    (``"3"`` -> 3) and name ``flag KEY=VALUE`` when they refuse one.
    """
    from sftkit.options import CommandLineText

    out = {}
    for item in items:
        if "=" not in item:
            raise UsageError(f"{flag} {item!r} must look like KEY=VALUE")
        key, value = item.split("=", 1)
        out[key.strip()] = CommandLineText(value, f"{flag} {item}")
    return out


def checked_value(annotation: Any) -> Callable:
    """A click callback that checks a flag's text through ``sftkit.options`` (NaN refused too), e.g.
    ``Annotated[float, Field(ge=0, le=1)]``; a refused value is click's usage error (exit 2)."""
    from sftkit.options import CommandLineText, Declared, ValueProblem

    def callback(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
        if value is None:
            return None
        try:
            return Declared(param.name or "", annotation).check(CommandLineText(str(value), param.opts[0]))
        except ValueProblem as exc:
            raise click.BadParameter(str(exc)) from None

    return callback


def parse_names(values: tuple[str, ...] | list[str]) -> list[str]:
    """``("a,b", "c")`` -> ``["a", "b", "c"]`` (comma-separated, repeatable flags)."""
    return [name.strip() for value in values for name in value.split(",") if name.strip()]


def reporter_flags(func: Callable) -> Callable:
    """--reporter and --no-reporter (as given: tuples of comma-separated names)."""
    options = [
        click.option("--reporter", "reporters", multiple=True, metavar="NAMES",
                     help="Run only these reporters (comma-separated, repeatable); default: every reporter that "
                          "declares itself default-on (the built-in json and html). `sftkit plugins` lists them."),
        click.option("--no-reporter", "no_reporters", multiple=True, metavar="NAMES",
                     help="Leave these reporters out (comma-separated, repeatable)."),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def parse_component_options(items: tuple[str, ...] | list[str], flag: str, example: str) -> dict[str, dict[str, str]]:
    """``("quality.near_dup_threshold=0.7",)`` -> ``{"quality": {"near_dup_threshold": "0.7"}}``: options of
    named components (``--validator-option``, ``--metric-option``); ``example`` names one such component."""
    out: dict[str, dict[str, str]] = {}
    for key, value in parse_key_values(items, flag).items():
        if "." not in key:
            kind = flag.strip("-").split("-")[0]  # --metric-option: the metric
            raise UsageError(f"{flag} {key}={value}: name the {kind}, e.g. {example}.{key}={value}")
        name, option = key.split(".", 1)
        out.setdefault(name.strip(), {})[option.strip()] = value
    return out


def data_flags(func: Callable) -> Callable:
    """--spec, --column, --instruction, --loader, --loader-option, --skip-invalid (as given)."""
    options = [
        click.option("--spec", metavar="NAME|PATH",
                     help="Dataset spec: a built-in name (alpaca, financial_phrasebank, ...) or a YAML path; "
                          "default: detected from the columns (the choice is printed)."),
        click.option("--column", "columns", multiple=True, metavar="FIELD=COLUMN",
                     help="Map a canonical field (instruction, input, output, system, messages, label, task) to a "
                          "source column, e.g. --column output=label; dotted paths such as instances.0.output work "
                          "(repeatable)."),
        click.option("--instruction", metavar="TEXT", help="A constant instruction for data that has none."),
        click.option("--loader", metavar="NAME", help="Force a loader (default: chosen from the file suffix)."),
        click.option("--loader-option", "loader_options", multiple=True, metavar="KEY=VALUE",
                     help="A loader option, e.g. encoding_errors=replace (repeatable)."),
        click.option("--skip-invalid", is_flag=True,
                     help="Skip broken lines (bad JSON, bad UTF-8, malformed CSV) instead of stopping; they are listed."),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def data_options(func: Callable) -> Callable:
    """The data flags, handed to the command as one ``request: DataRequest`` (path not yet set)."""

    @functools.wraps(func)
    def command(*args: Any, spec, columns, instruction, loader, loader_options, skip_invalid, **kwargs: Any) -> Any:
        from sftkit.pipeline import DataRequest

        request = DataRequest(spec=spec, columns=parse_key_values(columns, "--column"), instruction=instruction,
                              loader=loader, loader_options=parse_key_values(loader_options, "--loader-option"),
                              skip_invalid=skip_invalid)
        return func(*args, request=request, **kwargs)

    return data_flags(command)


def render_flags(func: Callable) -> Callable:
    """--template, --template-option, --masking, --masking-option, --model, --max-length,
    --add-special-tokens, --trust-remote-code (as given)."""
    options = [
        click.option("--template", metavar="NAME", help="Prompt template (default: the spec's)."),
        click.option("--template-option", "template_options", multiple=True, metavar="KEY=VALUE",
                     help="A template option (repeatable)."),
        click.option("--masking", metavar="NAME",
                     help="Masking strategy (default: the one registered as the default, completion_only)."),
        click.option("--masking-option", "masking_options", multiple=True, metavar="KEY=VALUE",
                     help="A masking option, e.g. prompt_weight=0.2 (repeatable)."),
        click.option("--model", metavar="NAME", default="smollm2-135m", show_default=True,
                     help="The model (whose tokenizer is used): smollm2-135m (the offline default), tiny-random "
                          "(tests; also tiny-random-t5, -opt, -gpt2, -neox), a local folder, or a hub id."),
        click.option("--max-length", metavar="N", type=click.IntRange(min=1, max=10**7), default=None,
                     help="Truncate to N tokens."),
        click.option("--max-source-length", metavar="N", type=click.IntRange(min=1, max=10**7), default=None,
                     help="Encoder-decoder models (T5): truncate the encoder input to N tokens (default: --max-length)."),
        click.option("--max-target-length", metavar="N", type=click.IntRange(min=1, max=10**7), default=None,
                     help="Encoder-decoder models (T5): truncate the decoder target to N tokens (default: "
                          "--max-length)."),
        click.option("--add-special-tokens", is_flag=True,
                     help="Add the template's delimiters to the tokenizer as special tokens."),
        click.option("--trust-remote-code", is_flag=True, help="Allow model code from the model folder (off by default)."),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def render_options(func: Callable) -> Callable:
    """The render flags, handed to the command as one ``render: RenderSettings``."""

    @functools.wraps(func)
    def command(*args: Any, template, template_options, masking, masking_options, model, max_length,
                max_source_length, max_target_length, add_special_tokens, trust_remote_code, **kwargs: Any) -> Any:
        from sftkit.pipeline import RenderSettings

        render = RenderSettings(
            template=template, template_options=parse_key_values(template_options, "--template-option"),
            masking=masking, masking_options=parse_key_values(masking_options, "--masking-option"), model=model,
            max_length=max_length, max_source_length=max_source_length, max_target_length=max_target_length,
            add_special_tokens=add_special_tokens, trust_remote_code=trust_remote_code)
        return func(*args, render=render, **kwargs)

    return render_flags(command)


def main(argv: list[str] | None = None) -> Any:
    """Entry point: run the CLI, turning user errors into one message and exit code 2."""
    from sftkit.console import err_console, plain, visible
    from sftkit.io import clear_protected
    from sftkit.registry import debug_enabled

    clear_protected()
    try:
        rv = cli.main(args=argv, prog_name="sftkit", standalone_mode=False)
        # click returns ctx.exit(code)'s code when not standalone: exit with it, so `python -m sftkit`
        # and in-process runners see the same status as the console script.
        if isinstance(rv, int) and not isinstance(rv, bool) and rv != 0:
            sys.exit(rv)
        return rv
    except SftkitError as exc:
        if debug_enabled():
            raise
        err_console.print(plain(f"error: {exc.message}", "bold red"))
        if exc.hint:
            err_console.print(plain(f"  hint: {exc.hint}", "yellow"))
        sys.exit(exc.exit_code)
    except click.exceptions.Abort:
        err_console.print(plain("aborted", "red"))
        sys.exit(130)
    except click.ClickException as exc:
        # click's own messages quote option values and paths: show them inert as well.
        shown = io.StringIO()
        exc.show(file=shown)
        sys.stderr.write(visible(shown.getvalue()))
        sys.stderr.flush()
        sys.exit(exc.exit_code)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        err_console.print(plain("interrupted", "red"))
        sys.exit(130)
    except Exception as exc:
        # A full disk, a read-only or forbidden path, a failing device (an OSError, or a Rust
        # library's error that carries one): the machine's state, not an sftkit bug (most writes
        # and reads name their file earlier; this is the safety net). Anything else is an sftkit
        # or plugin bug: one line, the traceback on request.
        if debug_enabled():
            raise
        machine = os_error_in(exc)
        if machine is None or machine.errno not in ENVIRONMENT_ERRNOS:
            _internal_error(exc)
        what = f"{machine.filename}: " if machine.filename else ""
        err_console.print(plain(f"error: {what}{os_reason(machine)}", "bold red"))
        err_console.print(plain(f"  hint: {os_hint(machine)}; a file being written may be incomplete", "yellow"))
        sys.exit(SftkitError.exit_code)


def _internal_error(exc: BaseException) -> None:
    from sftkit.console import err_console, plain

    err_console.print(plain(f"internal error: {type(exc).__name__}: {exc}", "bold red"))
    err_console.print(plain("  rerun with SFTKIT_DEBUG=1 for the traceback, and please report it", "yellow"))
    sys.exit(EXIT_INTERNAL)


if __name__ == "__main__":
    main()
