"""The ``tgflow`` entry point: groups, global options, and error handling."""

from __future__ import annotations

import importlib
import os
import re
import sys
from pathlib import Path
from typing import Optional

import typer
from typer.core import TyperGroup

try:  # typer >= 0.2x vendors click; older typer re-exports the real one
    from typer.exceptions import TyperException as _UsageError
except ImportError:  # pragma: no cover
    from click import ClickException as _UsageError

from .errors import INTERRUPTED, USAGE
from .guard import apply_globals, report, run
from .help import HELP_OPTIONS, polish

# Every command, in help order: (module, attribute). A module is imported only when its
# command runs (or --help lists them all), so `tgflow tgsp verify` loads no training,
# export or telemetry code. The attribute is a Typer group or a command function.
COMMANDS = {
    "key": ("key_cmds", "app"), "tgsp": ("tgsp_cmds", "app"), "peft": ("peft_cmds", "app"),
    "route": ("route_cmds", "app"), "push": ("oci_cmds", "push"), "pull": ("oci_cmds", "pull"), "model": ("model_cmds", "app"), "fed": ("fed_cmds", "app"),
    "privacy": ("privacy_cmds", "app"), "export": ("export_cmds", "export"), "version": ("meta_cmds", "version"),
    "doctor": ("meta_cmds", "doctor"), "completion": ("meta_cmds", "completion"),
}


def _load(name: str):
    module, attr = COMMANDS[name]
    obj = getattr(importlib.import_module(f".{module}", __package__), attr)
    from typer.main import get_command, get_group

    if isinstance(obj, typer.Typer):  # a group, even of one command (get_command would flatten it)
        obj.rich_markup_mode = None  # as the root's: plain help, and markup in data is never interpreted
        return polish(get_group(obj))
    one = typer.Typer(add_completion=False, rich_markup_mode=None)
    one.command(name)(obj)
    return polish(get_command(one))


class LazyGroup(TyperGroup):
    """The root group: a subcommand's module is imported when the subcommand is asked for."""

    def list_commands(self, ctx) -> list[str]:
        return list(COMMANDS)

    def get_command(self, ctx, name: str):
        if name not in self.commands and name in COMMANDS:
            self.add_command(_load(name), name)
        return super().get_command(ctx, name)


app = typer.Typer(
    name="tgflow",
    cls=LazyGroup,
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    context_settings=HELP_OPTIONS,
    help="Privacy-preserving continuous learning of LoRA adapters, delivered as signed, encrypted TGSP packages.\n\n"
         "Exit codes: 0 ok, 1 verification/policy failure, 2 bad input, 3 key/passphrase, 4 decryption failed, "
         "5 output not writable, 130 interrupted (Ctrl-C), 143 terminated (SIGTERM). See docs/cli.md.",
)


def _version(value: bool) -> None:
    if value:
        from tgsp.version import TOOL

        typer.echo(TOOL)
        raise typer.Exit()


@app.callback()
def _global(
    debug: bool = typer.Option(False, "--debug", help="Show tracebacks on errors.", envvar="TGFLOW_DEBUG"),
    home: Optional[Path] = typer.Option(None, "--home", help="Keyring folder (default $TGFLOW_HOME or ~/.tgflow).", envvar="TGFLOW_HOME"),
    quiet: bool = typer.Option(False, "-q", "--quiet", help="Print only errors (and --json output)."),
    verbose: int = typer.Option(0, "-v", "--verbose", count=True, help="Say more: notes and hints (repeatable)."),
    version: bool = typer.Option(False, "-V", "--version", callback=_version, is_eager=True, help="Print the version."),
) -> None:
    apply_globals(debug, home, quiet, verbose)


def _usage(exc) -> int:
    ctx = getattr(exc, "ctx", None)
    command = ctx.command_path if ctx is not None else "tgflow"
    # Click lays out its own text with newlines and tabs ("Choose from:\n\t..."): one line of it; any
    # other control character (from a typed value) the printer still escapes.
    message = re.sub(r"\s*[\n\t]\s*", " ", exc.format_message()).strip()
    return report(message, f"see: {command} --help", USAGE, type_="UsageError")


_CLI = None
# Global flags may come after the subcommand too (`tgflow tgsp verify PKG --home H`):
# they are moved to the front before parsing. (With a value: how many tokens.)
_GLOBAL = {"--debug": 0, "-q": 0, "--quiet": 0, "-v": 0, "-vv": 0, "--verbose": 0, "--home": 1}


def command():
    """The click command tree, built once, with plain metavars."""
    global _CLI
    if _CLI is None:
        from typer.main import get_command

        _CLI = polish(get_command(app))
    if os.environ.get("_TGFLOW_COMPLETE"):  # the shell asks for completions (tgflow completion SHELL)
        from typer._completion_classes import completion_init

        completion_init()
    return _CLI


def hoist(argv: list[str]) -> list[str]:
    front, rest, i = [], [], 0
    while i < len(argv):
        a = argv[i]
        if a == "--":
            rest += argv[i:]
            break
        name = a.split("=", 1)[0]
        if name in _GLOBAL and i > 0:
            take = 0 if "=" in a else _GLOBAL[name]
            front += argv[i:i + 1 + take]
            i += 1 + take
            continue
        rest.append(a)
        i += 1
    return front + rest


def _run(argv: list[str]) -> int:
    try:
        rv = command().main(args=hoist(argv), prog_name="tgflow", standalone_mode=False)
    except typer.Exit as exc:  # raised outside a command (eager --version, --help)
        rv = exc.exit_code
    # typer returns Exit's code instead of raising in non-standalone mode;
    # it turns Ctrl-C into 130 that way. Never let that read as success.
    if isinstance(rv, int) and rv == INTERRUPTED:
        return report("interrupted", None, INTERRUPTED, type_="Interrupted")
    return rv if isinstance(rv, int) else 0


def main(argv: list[str] | None = None, *, pending: list[int] | None = None) -> int:
    """Run one command; ``pending``: termination signals that arrived while the CLI loaded (start.py)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    return run(lambda: _parse_and_run(argv), argv, pending)


def _parse_and_run(argv: list[str]) -> int:
    try:
        return _run(argv)
    except _UsageError as exc:  # bad flags, missing arguments
        return _usage(exc)
    except typer.Abort:
        raise KeyboardInterrupt from None
