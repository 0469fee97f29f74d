"""The ``tgflow`` entry point: groups, global options, and error handling."""

from __future__ import annotations

import os
import sys
import traceback
from pathlib import Path
from typing import Optional

import typer

try:  # typer >= 0.2x vendors click; older typer re-exports the real one
    from typer.exceptions import TyperException as _UsageError
except ImportError:  # pragma: no cover
    from click import ClickException as _UsageError

from . import export_cmds, key_cmds, peft_cmds, tgsp_cmds
from .common import STATE, emit_json
from .errors import INTERRUPTED, TERMINATED, USAGE, classify
from .signals import Terminated, terminate_raises
from .term import styled, warn

app = typer.Typer(
    name="tgflow",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    help="Privacy-preserving continuous learning of LoRA adapters, delivered as signed, encrypted TGSP packages.\n\n"
         "Exit codes: 0 ok, 1 verification/policy failure, 2 bad input, 3 key/passphrase, 4 decryption failed, "
         "5 output not writable, 130 interrupted (Ctrl-C), 143 terminated (SIGTERM). See docs/cli.md.",
)
app.add_typer(key_cmds.app, name="key")
app.add_typer(tgsp_cmds.app, name="tgsp")
app.add_typer(peft_cmds.app, name="peft")
app.command("export")(export_cmds.export)


def _version(value: bool) -> None:
    if value:
        from tgsp.package import TOOL

        typer.echo(TOOL)
        raise typer.Exit()


@app.callback()
def _global(
    debug: bool = typer.Option(False, "--debug", help="Show tracebacks on errors.", envvar="TGFLOW_DEBUG"),
    home: Optional[Path] = typer.Option(None, "--home", help="Keyring folder (default $TGFLOW_HOME or ~/.tgflow).", envvar="TGFLOW_HOME"),
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version."),
) -> None:
    STATE.debug, STATE.home = debug, home


def _report(message: str, hint: str | None, code: int, *, check=None, type_: str = "") -> int:
    warn(styled("error:", "bold red"), f" {message}")
    if hint:
        warn(styled("hint:", "dim"), f" {hint}")
    if STATE.json and not STATE.reported:
        emit_json({"ok": False, "error": {"message": message, "hint": hint, "exit_code": code,
                                          "check": check, "type": type_}})
    return code


def _usage(exc) -> int:
    ctx = getattr(exc, "ctx", None)
    command = ctx.command_path if ctx is not None else "tgflow"
    return _report(exc.format_message(), f"see: {command} --help", USAGE, type_="UsageError")


def _run(argv: list[str]) -> int:
    try:
        rv = app(args=argv, prog_name="tgflow", standalone_mode=False)
    except typer.Exit as exc:  # raised outside a command (eager --version, --help)
        rv = exc.exit_code
    # typer returns Exit's code instead of raising in non-standalone mode;
    # it turns Ctrl-C into 130 that way. Never let that read as success.
    if isinstance(rv, int) and rv == INTERRUPTED:
        return _report("interrupted", None, INTERRUPTED, type_="Interrupted")
    return rv if isinstance(rv, int) else 0


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    STATE.json = "--json" in argv
    STATE.debug = "--debug" in argv or os.environ.get("TGFLOW_DEBUG", "") not in ("", "0")
    STATE.reported = False
    with terminate_raises():
        try:
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


def entry() -> None:
    sys.exit(main())
