"""Running one command (no typer here): state reset, signals, and every exception onto
its exit code with a one-line error. main.py (the Typer tree) and fast.py (the fast path
of `tgsp verify`) both run commands through ``run``, so they end the same way."""

from __future__ import annotations

import os
import traceback
from typing import Callable

from . import common
from .common import STATE, emit_json
from .errors import INTERRUPTED, TERMINATED, classify
from .signals import Terminated, terminate_raises
from .term import Level, error, styled


def report(message: str, hint: str | None, code: int, *, check=None, type_: str = "") -> int:
    error(styled("error:", "bold red"), f" {message}")
    if hint:
        error(styled("hint:", "dim"), f" {hint}")
    if STATE.json and not STATE.reported:
        emit_json({"ok": False, "error": {"message": message, "hint": hint, "exit_code": code,
                                          "check": check, "type": type_}})
    return code


def apply_globals(debug: bool, home, quiet: bool, verbose: int) -> None:
    """The global flags (the root callback's, and the fast path's) into the shared state."""
    STATE.debug, STATE.home = debug, home
    Level.quiet, Level.verbose = quiet, verbose
    if home is not None:  # one keyring for every layer that reads it (config.toml, the runner)
        os.environ["TGFLOW_HOME"] = str(home)


def run(body: Callable[[], int], argv: list[str], pending: list[int] | None) -> int:
    """``body``'s exit code; ``pending``: termination signals that arrived before it could start."""
    STATE.json = "--json" in argv
    STATE.debug = "--debug" in argv or os.environ.get("TGFLOW_DEBUG", "") not in ("", "0")
    STATE.reported = False
    STATE.compact = False
    STATE.registry = {}
    Level.quiet, Level.verbose, Level.wide = False, 0, False
    common.reset()  # config.toml is read afresh for each command
    with terminate_raises(), common.env_restored("TGFLOW_INDEX_DAYS"):
        try:
            if pending:
                raise Terminated(pending[0])
            return body()
        except KeyboardInterrupt:
            return report("interrupted", None, INTERRUPTED, type_="Interrupted")
        except Terminated:
            return report("terminated by signal; nothing was left half-written", None, TERMINATED, type_="Terminated")
        except Exception as exc:
            message, hint, code = classify(exc)
            if STATE.debug:
                traceback.print_exc()
            return report(message, hint, code, check=getattr(exc, "check", None), type_=type(exc).__name__)
