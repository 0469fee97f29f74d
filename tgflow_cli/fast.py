"""The fast path: `tgflow tgsp verify ...` and `tgflow route resolve ...` without typer.

CI runs `tgflow tgsp verify PKG && deploy` before every deploy, and a deploying CronJob runs
`tgflow route resolve` on every schedule; building the whole Typer tree (with pydantic behind
typer's value conversion) costs more than the work. This module recognises exactly the
command lines it can read without doubt and runs them through the same code as the Typer
commands (verify_run.py, resolve_run.py) and the same error handling (guard.py). Anything
else (help, a typo, an odd value, `--`, combined short flags) returns None, and the full CLI
parses it and gives its usual message. tests/cli/test_fast_path.py checks that every line
this accepts parses to the same values under the real CLI.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Callable, NamedTuple

_INT = re.compile(r"-?[0-9]{1,18}\Z")
_BOOL = {"1": True, "true": True, "t": True, "yes": True, "y": True, "on": True,
         "0": False, "false": False, "f": False, "no": False, "n": False, "off": False}
_GLOBAL_FLAGS = ("-q", "--quiet", "--debug", "--verbose")


class _Unsure(Exception):
    """This line is for the full CLI to read."""


class Grammar(NamedTuple):
    """One command's options: flags, single-valued (the last wins), repeatable."""
    flags: dict[str, str]
    one: dict[str, str]
    many: dict[str, str]
    positional: tuple[int, int | None]  # how many positionals: at least, at most (None: any)


GRAMMARS = {
    ("tgsp", "verify"): Grammar(
        flags={"--json": "json_out"},
        one={"--min-version": "min_version", "--state": "state", "--route": "route", "--kind": "kind",
             "--require-hardware": "require_hardware", "-o": "fmt", "--output-format": "fmt"},
        many={"--trusted": "trusted", "--revocations": "revocations"}, positional=(1, None)),
    ("route", "resolve"): Grammar(
        flags={"--json": "json_out"}, one={"--alias": "alias", "--state": "state", "--registry": "registry",
                                           "--spec": "spec"},
        many={"--trusted": "trusted"}, positional=(1, 1)),
}
_NO_GLOBALS = Grammar({}, {}, {}, (0, 0))


class Line:
    """The words of one line, sorted (a plain class: a dataclass costs start-up time)."""

    def __init__(self) -> None:
        self.command: tuple[str, str] = ("", "")
        self.positionals: list[str] = []
        self.values: dict[str, str] = {}
        self.lists: dict[str, list[str]] = {}
        self.flags: set[str] = set()
        self.home: str | None = None
        self.debug, self.quiet, self.verbose = False, False, 0


def parse(argv: list[str]) -> Line | None:
    """The words of a line this module runs, or None when the full CLI must read it."""
    for at in range(len(argv) - 1):
        if tuple(argv[at:at + 2]) in GRAMMARS:
            break
    else:
        return None
    command = tuple(argv[at:at + 2])
    grammar = GRAMMARS[command]
    try:
        before = _read(argv[:at], _NO_GLOBALS)
        line = _read(argv[at + 2:], grammar)
    except _Unsure:
        return None
    if before.home and line.home:
        return None  # which one wins is typer's business
    line.command = command
    line.home = line.home or before.home
    line.debug, line.quiet = line.debug or before.debug, line.quiet or before.quiet
    line.verbose += before.verbose
    least, most = grammar.positional
    if len(line.positionals) < least or (most is not None and len(line.positionals) > most):
        return None
    return line


def _read(words: list[str], g: Grammar) -> Line:
    line, i = Line(), 0
    while i < len(words):
        w = words[i]
        name, eq, value = w.partition("=") if w.startswith("--") else (w, "", "")
        if w == "-" or not w.startswith("-"):
            _value(w)
            line.positionals.append(w)
        elif w in _GLOBAL_FLAGS or w in ("-v", "-vv"):  # what main.hoist moves; -vvv is typer's to refuse
            _global_flag(line, w)
        elif w in g.flags:
            line.flags.add(g.flags[w])
        elif name == "--home" or name in g.one or name in g.many:
            if not eq:
                if i + 1 >= len(words):
                    raise _Unsure
                i, value = i + 1, words[i + 1]
            _value(value)
            if name == "--home":
                line.home = value
            elif name in g.many:
                line.lists.setdefault(g.many[name], []).append(value)
            else:
                line.values[g.one[name]] = value
        else:
            raise _Unsure  # -h, --, an unknown flag, -qv, -ojson: the full CLI says what it makes of them
        i += 1
    if len(line.positionals) > (g.positional[1] if g.positional[1] is not None else len(line.positionals)):
        raise _Unsure
    return line


def _global_flag(line: Line, w: str) -> None:
    if w in ("-q", "--quiet"):
        line.quiet = True
    elif w == "--debug":
        line.debug = True
    else:
        line.verbose += 1 if w == "--verbose" else len(w) - 1


def _value(value: str) -> None:
    if not value or value == "--" or (value.startswith("-") and value != "-"):
        raise _Unsure  # click would read an option name here, or an empty path


def _path(value: str | None, *, folder_ok: bool = True, file_ok: bool = True) -> Path | None:
    if value is None:
        return None
    p = Path(value)
    if (not folder_ok and p.is_dir()) or (not file_ok and p.exists() and not p.is_dir()):
        raise _Unsure  # the option refuses it: typer says so
    if value != "-" and p.exists() and not os.access(p, os.R_OK):
        raise _Unsure  # typer's paths are readable=True: it refuses an unreadable one
    return p


def _settle_verify(line: Line) -> dict:
    from .verify_run import Hardware

    v = line.values
    if "min_version" in v and not _INT.match(v["min_version"]):
        raise _Unsure
    if "require_hardware" in v and v["require_hardware"] not in {h.value for h in Hardware}:
        raise _Unsure
    return {"packages": [_path(p) for p in line.positionals], "trusted": line.lists.get("trusted") or None,
            "revocations": [_path(r) for r in line.lists.get("revocations", [])] or None,
            "min_version": int(v["min_version"]) if "min_version" in v else None,
            "state": _path(v.get("state"), folder_ok=False), "route": v.get("route"), "kind": v.get("kind"),
            "hardware": Hardware(v["require_hardware"]) if "require_hardware" in v else None,
            "json_out": "json_out" in line.flags, "fmt": v.get("fmt")}


def _settle_resolve(line: Line) -> dict:
    v = line.values
    if "spec" in v or v.get("registry", "").startswith("oci://"):
        raise _Unsure  # a run spec loads pydantic, a registry httpx, anyway: the full CLI does it
    return {"route": line.positionals[0], "alias": v.get("alias", "production"),
            "state": _path(v.get("state"), folder_ok=False), "trusted": line.lists.get("trusted") or None,
            "registry": v.get("registry"), "spec": None, "json_out": "json_out" in line.flags}


def settle(line: Line) -> dict:
    """Values as the Typer command receives them; raises _Unsure where typer would refuse."""
    home = line.home or os.environ.get("TGFLOW_HOME") or None
    _path(home)
    debug_env = os.environ.get("TGFLOW_DEBUG", "").strip().lower()
    if not line.debug and debug_env and debug_env not in _BOOL:
        raise _Unsure
    settle_command = _settle_verify if line.command == ("tgsp", "verify") else _settle_resolve
    return {"globals": {"debug": line.debug or _BOOL.get(debug_env, False), "home": Path(home) if home else None,
                        "quiet": line.quiet, "verbose": line.verbose},
            "command": settle_command(line)}


def _runner(command: tuple[str, str]) -> Callable[..., int | None]:
    if command == ("tgsp", "verify"):
        from .verify_run import verify_packages

        return verify_packages
    from .resolve_run import resolve_alias

    return resolve_alias


def main(argv: list[str], pending: list[int]) -> int | None:
    """The exit code, or None when the full CLI must run this line."""
    if pending:
        return None
    line = parse(argv)
    if line is None:
        return None
    try:
        values = settle(line)
    except (_Unsure, OSError, ValueError):  # a path the OS will not even stat: the full CLI reports it
        return None
    from . import guard

    return guard.run(lambda: _run(line.command, values), argv, pending)


def _run(command: tuple[str, str], values: dict) -> int:
    from .guard import apply_globals

    apply_globals(**values["globals"])  # as the root callback does
    return _runner(command)(**values["command"]) or 0
