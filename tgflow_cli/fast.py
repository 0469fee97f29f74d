"""The fast path: `tgflow tgsp verify ...` without loading typer.

CI runs `tgflow tgsp verify PKG && deploy` before every deploy; building the whole Typer
tree (with pydantic behind typer's value conversion) costs more than the verification.
This module recognises exactly the command lines it can read without doubt and runs them
through the same code as the Typer command (verify_run.py) and the same error handling
(guard.py). Anything else (help, a typo, an odd value, `--`, combined short flags) returns
None, and the full CLI parses it and gives its usual message. tests/cli/test_fast_path.py
checks that every line this accepts parses to the same values under the real CLI.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

_INT = re.compile(r"-?[0-9]{1,18}\Z")
_BOOL = {"1": True, "true": True, "t": True, "yes": True, "y": True, "on": True,
         "0": False, "false": False, "f": False, "no": False, "n": False, "off": False}
_FLAGS = {"--json": "json_out"}
_ONE = {"--min-version": "min_version", "--state": "state", "--route": "route", "--kind": "kind",
        "--require-hardware": "require_hardware", "-o": "fmt", "--output-format": "fmt", "--home": "home"}
_MANY = {"--trusted": "trusted", "--revocations": "revocations"}


class _Unsure(Exception):
    """This line is for the full CLI to read."""


@dataclass
class Verify:
    packages: list[str] = field(default_factory=list)
    trusted: list[str] = field(default_factory=list)
    revocations: list[str] = field(default_factory=list)
    min_version: str | None = None
    state: str | None = None
    route: str | None = None
    kind: str | None = None
    require_hardware: str | None = None
    fmt: str | None = None
    json_out: bool = False
    home: str | None = None
    debug: bool = False
    quiet: bool = False
    verbose: int = 0


def parse(argv: list[str]) -> Verify | None:
    """The options of a `tgsp verify` line, or None when the full CLI must read it."""
    if "tgsp" not in argv:
        return None
    at = argv.index("tgsp")
    if argv[at + 1:at + 2] != ["verify"]:
        return None
    try:
        before = _read(argv[:at], globals_only=True)
        v = _read(argv[at + 2:], globals_only=False)
    except _Unsure:
        return None
    if before.home and v.home:
        return None  # which one wins is typer's business
    for name in ("home", "debug", "quiet"):  # a global flag may come before the command or after it
        setattr(v, name, getattr(v, name) or getattr(before, name))
    v.verbose += before.verbose
    return v if v.packages else None


def _read(words: list[str], *, globals_only: bool) -> Verify:
    v, i = Verify(), 0
    while i < len(words):
        w = words[i]
        name, eq, value = w.partition("=") if w.startswith("--") else (w, "", "")
        if w == "-" or not w.startswith("-"):
            _value(w)
            v.packages.append(w)
        elif w in ("-q", "--quiet"):
            v.quiet = True
        elif w == "--debug":
            v.debug = True
        elif w == "--verbose" or re.fullmatch(r"-v{1,9}", w):
            v.verbose += 1 if w == "--verbose" else len(w) - 1
        elif w in _FLAGS and not globals_only:
            setattr(v, _FLAGS[w], True)
        elif name == "--home" or (not globals_only and (name in _ONE or name in _MANY)):
            if not eq:
                if i + 1 >= len(words):
                    raise _Unsure
                i, value = i + 1, words[i + 1]
            _value(value)
            if name in _MANY:
                getattr(v, _MANY[name]).append(value)
            else:
                setattr(v, _ONE[name], value)
        else:
            raise _Unsure  # -h, --, an unknown flag, -qv, -ojson: the full CLI says what it makes of them
        i += 1
    if globals_only and v.packages:
        raise _Unsure
    return v


def _value(value: str) -> None:
    if not value or value == "--" or (value.startswith("-") and value != "-"):
        raise _Unsure  # click would read an option name here, or an empty path


def settle(v: Verify) -> dict:
    """Values as the Typer command receives them; raises _Unsure where typer would refuse."""
    from .verify_run import Hardware

    if v.min_version is not None and not _INT.match(v.min_version):
        raise _Unsure
    if v.require_hardware is not None and v.require_hardware not in Hardware._value2member_map_:
        raise _Unsure
    if v.state is not None and Path(v.state).is_dir():
        raise _Unsure  # the option refuses a folder
    home = v.home or os.environ.get("TGFLOW_HOME") or None
    debug_env = os.environ.get("TGFLOW_DEBUG", "").strip().lower()
    if not v.debug and debug_env and debug_env not in _BOOL:
        raise _Unsure
    return {
        "globals": {"debug": v.debug or _BOOL.get(debug_env, False), "home": Path(home) if home else None,
                    "quiet": v.quiet, "verbose": v.verbose},
        "verify": {"packages": [Path(p) for p in v.packages], "trusted": v.trusted or None,
                   "revocations": [Path(r) for r in v.revocations] or None,
                   "min_version": int(v.min_version) if v.min_version is not None else None,
                   "state": Path(v.state) if v.state is not None else None, "route": v.route, "kind": v.kind,
                   "hardware": Hardware(v.require_hardware) if v.require_hardware else None,
                   "json_out": v.json_out, "fmt": v.fmt},
    }


def main(argv: list[str], pending: list[int]) -> int | None:
    """The exit code, or None when the full CLI must run this line."""
    if pending:
        return None
    v = parse(argv)
    if v is None:
        return None
    try:
        values = settle(v)
    except _Unsure:
        return None
    from . import guard

    return guard.run(lambda: _verify(values), argv, pending)


def _verify(values: dict) -> int:
    from .common import STATE
    from .term import Level
    from .verify_run import verify_packages

    g = values["globals"]
    STATE.debug, STATE.home = g["debug"], g["home"]
    Level.quiet, Level.verbose = g["quiet"], g["verbose"]
    if g["home"] is not None:  # as the root callback does
        os.environ["TGFLOW_HOME"] = str(g["home"])
    verify_packages(**values["verify"])
    return 0
