"""The ``tgflow`` entry point: groups, global options, and error handling."""

from __future__ import annotations

import os
import re
import sys
import traceback
from pathlib import Path
from typing import Optional

import typer

try:  # typer >= 0.2x vendors click; older typer re-exports the real one
    from typer.exceptions import TyperException as _UsageError
except ImportError:  # pragma: no cover
    from click import ClickException as _UsageError

from . import (common, export_cmds, fed_cmds, key_cmds, meta_cmds, model_cmds, peft_cmds, privacy_cmds, route_cmds,
               tgsp_cmds)
from .common import STATE, emit_json
from .errors import INTERRUPTED, TERMINATED, USAGE, classify
from .help import HELP_OPTIONS, polish
from .signals import Terminated, terminate_raises
from .term import Level, error, styled

app = typer.Typer(
    name="tgflow",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    context_settings=HELP_OPTIONS,
    help="Privacy-preserving continuous learning of LoRA adapters, delivered as signed, encrypted TGSP packages.\n\n"
         "Exit codes: 0 ok, 1 verification/policy failure, 2 bad input, 3 key/passphrase, 4 decryption failed, "
         "5 output not writable, 130 interrupted (Ctrl-C), 143 terminated (SIGTERM). See docs/cli.md.",
)
app.add_typer(key_cmds.app, name="key")
app.add_typer(tgsp_cmds.app, name="tgsp")
app.add_typer(peft_cmds.app, name="peft")
app.add_typer(route_cmds.app, name="route")
app.add_typer(model_cmds.app, name="model")
app.add_typer(fed_cmds.app, name="fed")
app.add_typer(privacy_cmds.app, name="privacy")
app.command("export")(export_cmds.export)
app.command("version")(meta_cmds.version)
app.command("doctor")(meta_cmds.doctor)
app.command("completion")(meta_cmds.completion)


def _version(value: bool) -> None:
    if value:
        from tgsp.builder import TOOL

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
    STATE.debug, STATE.home = debug, home
    Level.quiet, Level.verbose = quiet, verbose
    if home is not None:  # one keyring for every layer that reads it (config.toml, the runner)
        os.environ["TGFLOW_HOME"] = str(home)


def _report(message: str, hint: str | None, code: int, *, check=None, type_: str = "") -> int:
    error(styled("error:", "bold red"), f" {message}")
    if hint:
        error(styled("hint:", "dim"), f" {hint}")
    if STATE.json and not STATE.reported:
        emit_json({"ok": False, "error": {"message": message, "hint": hint, "exit_code": code,
                                          "check": check, "type": type_}})
    return code


def _usage(exc) -> int:
    ctx = getattr(exc, "ctx", None)
    command = ctx.command_path if ctx is not None else "tgflow"
    # Click lays out its own text with newlines and tabs ("Choose from:\n\t..."): one line of it; any
    # other control character (from a typed value) the printer still escapes.
    message = re.sub(r"\s*[\n\t]\s*", " ", exc.format_message()).strip()
    return _report(message, f"see: {command} --help", USAGE, type_="UsageError")


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
        return _report("interrupted", None, INTERRUPTED, type_="Interrupted")
    return rv if isinstance(rv, int) else 0


def main(argv: list[str] | None = None, *, pending: list[int] | None = None) -> int:
    """Run one command; ``pending``: termination signals that arrived while the CLI loaded (start.py)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    STATE.json = "--json" in argv
    STATE.debug = "--debug" in argv or os.environ.get("TGFLOW_DEBUG", "") not in ("", "0")
    STATE.reported = False
    STATE.compact = False
    Level.quiet, Level.verbose, Level.wide = False, 0, False
    common.reset()  # config.toml is read afresh for each command
    with terminate_raises(), common.env_restored("TGFLOW_INDEX_DAYS"):
        try:
            if pending:
                raise Terminated(pending[0])
            return _run(argv)
        except _UsageError as exc:  # bad flags, missing arguments
            return _usage(exc)
        except (typer.Abort, KeyboardInterrupt):
            return _report("interrupted", None, INTERRUPTED, type_="Interrupted")
        except Terminated:
            return _report("terminated by signal; nothing was left half-written", None, TERMINATED, type_="Terminated")
        except Exception as exc:
            message, hint, code = classify(exc)
            if STATE.debug:
                traceback.print_exc()
            return _report(message, hint, code, check=getattr(exc, "check", None), type_=type(exc).__name__)

