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
from .common import STATE, emit_json, err
from .errors import INTERRUPTED, USAGE, classify

app = typer.Typer(
    name="tgflow",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    help="Privacy-preserving continuous learning of LoRA adapters, delivered as signed, encrypted TGSP packages.\n\n"
         "Exit codes: 0 ok, 1 verification/policy failure, 2 bad input, 3 key/passphrase, 4 decryption failed, "
         "5 output not writable, 130 interrupted. See docs/cli.md.",
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


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    STATE.json = "--json" in argv
    STATE.debug = "--debug" in argv or os.environ.get("TGFLOW_DEBUG", "") not in ("", "0")
    STATE.reported = False
    try:
        app(args=argv, prog_name="tgflow", standalone_mode=False)
        return 0
    except typer.Exit as exc:
        return exc.exit_code
    except _UsageError as exc:  # bad flags, missing arguments
        exc.show(file=sys.stderr)
        return USAGE
    except (typer.Abort, KeyboardInterrupt):
        err.print("error: interrupted")
        return INTERRUPTED
    except Exception as exc:
        message, hint, code = classify(exc)
        if STATE.debug:
            traceback.print_exc()
        err.print(f"[bold red]error:[/] {message}", markup=True, highlight=False)
        if hint:
            err.print(f"[dim]hint:[/] {hint}")
        if STATE.json and not STATE.reported:
            emit_json({"ok": False, "error": {"message": message, "hint": hint, "exit_code": code,
                                              "check": getattr(exc, "check", None), "type": type(exc).__name__}})
        return code


def entry() -> None:
    sys.exit(main())
