"""Shared CLI plumbing: global state, output, passphrases, progress."""

from __future__ import annotations

import contextlib
import functools
import getpass
import json
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

from tgsp import Keyring
from tgsp.errors import InputError, PassphraseRequiredError
from tgsp.keyring import passphrase_from_env

from .term import Level, err, error, wide


@dataclass
class State:
    debug: bool = False
    home: Path | None = None
    json: bool = False
    reported: bool = False  # a --json report already went to stdout
    compact: bool = False  # JSON on one line (peft run --json: the report is the last line of stdout)
    registry: dict = field(default_factory=dict)  # this command's registry flags (oci_access.use)


STATE = State()


def reset() -> None:
    """Forget the loaded config.toml (each command reads it afresh)."""
    _config_at.cache_clear()


@functools.lru_cache(maxsize=4)
def _config_at(home: Path):
    from .config import load

    return load(home)


def config():
    """$TGFLOW_HOME/config.toml; flags and env win over it."""
    from tgsp.keyring import default_home

    return _config_at(Path(STATE.home) if STATE.home else default_home())


@contextlib.contextmanager
def env_restored(name: str) -> Iterator[None]:
    """Undo a command's own setting of ``name`` (main() may run many commands in one process)."""
    before = os.environ.get(name)
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = before


def index_days_setting() -> None:
    """config.toml's [route] index_days, for the registry code that reads $TGFLOW_INDEX_DAYS
    (the environment wins over the file, as everywhere)."""
    days = config().get("route", "index_days")
    if days is not None:
        os.environ.setdefault("TGFLOW_INDEX_DAYS", str(days))


def keyring() -> Keyring:
    return Keyring(STATE.home, pin=token_pin())


def token_pin() -> Callable[[], str]:
    """The PKCS#11 PIN: TGFLOW_PKCS11_PIN, TGFLOW_PKCS11_PIN_FILE, else a prompt
    on a terminal; never from argv. Asked once, only when a token is used."""
    cache: list[str] = []

    def get() -> str:
        if not cache:
            from tgsp import pkcs11

            value = pkcs11.pin_from_env()
            if value is None:
                if not (sys.stdin.isatty() and sys.stderr.isatty()):
                    pkcs11.no_pin()
                try:
                    value = getpass.getpass("PIN for the PKCS#11 token: ", stream=sys.stderr)
                except EOFError:
                    pkcs11.no_pin()
            cache.append(value)
        return cache[0]

    return get


def emit_json(obj: Any) -> None:
    if STATE.compact:
        sys.stdout.write(json.dumps(obj, sort_keys=True, default=str, separators=(",", ":")) + "\n")
    else:
        sys.stdout.write(json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


MIN_NEW_PASSPHRASE = 12


def passphrase(passphrase_file: Path | None, *, confirm: bool = False, key: str | None = None,
               new: bool = False, allow_weak: bool = False) -> Callable[[], str]:
    """A lazy, cached passphrase source: file flag, env, env file, a cloud
    secret reference, then a prompt only when stdin and stderr are terminals.
    ``key`` names the key in the prompt; ``new`` (a key being created) refuses
    passphrases shorter than 12 characters unless ``allow_weak``."""
    cache: list[str] = []

    def get() -> str:
        if cache:
            return cache[0]
        value = passphrase_from_env(str(passphrase_file) if passphrase_file else None)
        if value is None and os.environ.get("TGFLOW_PASSPHRASE_SECRET"):
            from .cloud_secrets import fetch

            value = fetch(os.environ["TGFLOW_PASSPHRASE_SECRET"])
        if value is None and config().get("keys", "passphrase_file"):
            value = passphrase_from_env(config().get("keys", "passphrase_file"))
        if value is None:
            value = _prompt(key, confirm=confirm, new=new, allow_weak=allow_weak)
        if new and not allow_weak and len(value) < MIN_NEW_PASSPHRASE:
            raise PassphraseRequiredError(
                f"the passphrase for a new key must have at least {MIN_NEW_PASSPHRASE} characters",
                hint="choose a longer one (a few random words), or pass --allow-weak-passphrase")
        cache.append(value)
        return value

    return get


def _prompt(key: str | None, *, confirm: bool, new: bool, allow_weak: bool, tries: int = 3) -> str:
    if not (sys.stdin.isatty() and sys.stderr.isatty()):
        raise PassphraseRequiredError("no passphrase given and no terminal to ask on")
    what = f"key {key}" if key else "the key"
    at_terminal = "type it again, or press Ctrl-C to stop"
    for _ in range(tries):
        try:
            value = getpass.getpass(f"Passphrase for {what}: ", stream=sys.stderr)
            if not value:
                error("the passphrase is empty; " + at_terminal)
                continue
            if new and not allow_weak and len(value) < MIN_NEW_PASSPHRASE:
                error(f"at least {MIN_NEW_PASSPHRASE} characters, please; " + at_terminal)
                continue
            if confirm and getpass.getpass(f"Repeat the passphrase for {what}: ", stream=sys.stderr) != value:
                error("the two passphrases did not match; " + at_terminal)
                continue
            return value
        except EOFError:
            break
    raise PassphraseRequiredError(f"no usable passphrase for {what} was entered",
                                  hint="run the command again (or set TGFLOW_PASSPHRASE_FILE)")


@contextlib.contextmanager
def progress(label: str, total: int | None) -> Iterator[Callable[[int], None] | None]:
    """A progress bar on stderr when it is a terminal; otherwise nothing."""
    if not sys.stderr.isatty() or STATE.json or os.environ.get("CI"):
        yield None
        return
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn, TransferSpeedColumn

    # markup=False: the consoles interpret no markup, so "[progress.description]" printed as text
    with Progress(TextColumn("{task.description}", style="progress.description", markup=False), BarColumn(),
                  DownloadColumn(),
                  TransferSpeedColumn(), TimeRemainingColumn(), console=err._rich(), transient=True) as bar:
        task = bar.add_task(label, total=total)
        yield lambda n: bar.advance(task, n)


def short(keyid: str) -> str:
    """A key or package id for people: 16 characters on a terminal, whole otherwise (-o wide, pipes)."""
    return keyid if wide() else keyid[:16]


FORMATS = ("json", "yaml", "wide")


def output_format(fmt: str | None, json_out: bool) -> str | None:
    """-o json|yaml|wide, as kubectl users type it, beside --json: "json", "yaml", or None (a table;
    with wide, full values)."""
    if fmt is not None and fmt not in FORMATS:
        raise InputError(f"-o {fmt!r} is not one of {', '.join(FORMATS)}", hint="-o json, -o yaml or -o wide")
    if fmt == "wide":
        Level.wide = True
    if json_out or fmt == "json":
        STATE.json = True
        return "json"
    return "yaml" if fmt == "yaml" else None


def emit(obj: Any, fmt: str) -> None:
    """``obj`` on stdout as one JSON document or one YAML document."""
    if fmt == "json":
        return emit_json(obj)
    import yaml

    sys.stdout.write(yaml.safe_dump(json.loads(json.dumps(obj, default=str)), sort_keys=True, allow_unicode=False))
