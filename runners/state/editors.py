"""What this machine's editors have signed or built on, per registry and route: an edit never
starts from an older (replayed) or different (forked) route index than the last one seen here.

Consumers pin the index version in their ``--state`` (registry.py); an editor pins it here,
in the keyring folder, so a registry whose index was put back to an old version (by anyone who
can write the folder or push the tag, no signing key needed) is refused instead of re-signed
with a fresh expiry. A write that another editor's replaced (an OCI registry without
conditional requests) shows up as a fork on this machine's next edit. No torch."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from tgsp import clock, route_index
from tgsp.atomic import write_bytes
from tgsp.canonical import encode, is_int, parse
from tgsp.errors import FormatError, InputError, OutputError, RollbackError
from tgsp.inputfile import read_input

from .locks import locked

FORMAT = "tgflow.route-editor-state/1"
FILE = "route-editors.json"


def _load(path: Path) -> dict[str, Any]:
    if not path.exists():
        return {}
    try:
        doc = parse(read_input(path, "route editor state", max_bytes=4 << 20), what=str(path))
    except FormatError as exc:
        raise InputError(f"{path} is unreadable: {exc}", hint="restore it, or remove it to trust the registry as it is") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT or not isinstance(doc.get("indexes"), dict):
        raise InputError(f"{path} is not a {FORMAT} document", hint="restore it, or remove it")
    return doc["indexes"]


def check(path: Path, where: str, route: str, doc: dict[str, Any] | None, raw: bytes | None) -> None:
    """RollbackError if ``doc`` is older than, or another version of, the index last seen here,
    or if there is none while this machine has signed one (an index deleted to start over)."""
    seen = _load(path).get(f"{where}#{route}")
    if not isinstance(seen, dict) or not is_int(seen.get("index_version")):
        return
    fix = (f"check tgflow route history {route}; if the registry's index is the one you want, re-sign it with "
           f"tgflow route refresh {route} --revive, or remove its entry from {path}")
    if doc is None:
        raise RollbackError(f"route {route} has no index in {where}, but this machine signed or built on its "
                            f"version {seen['index_version']}: the index was deleted or the registry replaced; "
                            "not starting a new one", hint=f"restore the index, or remove its entry from {path}")
    if doc["version"] < seen["index_version"]:
        raise RollbackError(f"route {route}'s index in {where} is version {doc['version']}, older than version "
                            f"{seen['index_version']} this machine signed or built on: a replayed index; not editing "
                            "it", hint=fix)
    if doc["version"] == seen["index_version"] and route_index.digest(raw) != seen.get("index_sha256"):
        raise RollbackError(f"route {route}'s index version {doc['version']} in {where} is not the one this machine "
                            "signed or built on (a fork, or another editor's write replaced it); not editing it",
                            hint=fix)


def ready(path: Path) -> None:
    """OutputError before an edit if the state could not be recorded after it (a keyring folder
    mounted read-only): the edit would otherwise be written and its pin lost."""
    folder = path.parent
    if not (folder.is_dir() and os.access(folder, os.W_OK)) or (path.exists() and not os.access(path, os.W_OK)):
        raise OutputError(f"cannot keep the route editor state in {path} (not writable)",
                          hint="run route edits with a writable TGFLOW_HOME (a round keeps it in its state folder)")


def record(path: Path, where: str, route: str, version: int, raw: bytes, *, lower: bool = False) -> None:
    """Pin ``version``; a pin never goes down (two editors on this machine may record out of
    order) unless ``lower`` (an index re-signed on purpose with refresh --revive)."""
    with locked(path.with_name(path.name + ".lock"), "route editor state", "record", wait=30.0):
        indexes = _load(path)
        old = indexes.get(f"{where}#{route}")
        if not lower and isinstance(old, dict) and is_int(old.get("index_version")) and old["index_version"] > version:
            return
        indexes[f"{where}#{route}"] = {"index_version": version, "index_sha256": route_index.digest(raw),
                                       "at": clock.fmt(clock.utcnow())}
        write_bytes(path, encode({"format": FORMAT, "indexes": indexes}) + b"\n", mode=0o600)
