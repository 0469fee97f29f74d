"""Route state folders of earlier tgflow versions, brought up to date on first use (store.py).

Each step can be repeated after a crash: a file is written in its new form before the old
one is deleted."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tgsp.atomic import write_bytes
from tgsp.canonical import encode, is_int
from tgsp.errors import InputError
from tgsp.inputfile import read_input

AUDIT_FORMAT = "tgflow.audit-key/1"
SEEN_FORMAT = "tgflow.novelty-seen/1"
SEEN_FILE, SEEN_AD = "novelty/seen.sealed", {"kind": "novelty-seen"}
RESIDUAL_FILE, RESIDUAL_AD = "federation/residual.sealed", {"kind": "fed-residual"}


def retained(version: int) -> tuple[str, dict[str, Any]]:
    """Release ``version``'s retained-examples file and its binding."""
    return f"retained/v{version}.sealed", {"kind": "retained", "version": version}


def legacy_release(folder: Path) -> dict[str, Any] | None:
    """The last release a pre-store folder recorded in its untagged route.json."""
    path = folder / "route.json"
    if not path.exists():
        return None
    try:
        obj = json.loads(read_input(path, "route state", max_bytes=1 << 20))
        version = obj["last_version"]
        if not is_int(version) or version < 0:
            raise ValueError
    except (ValueError, KeyError, TypeError):
        raise InputError(f"legacy route state {path} is damaged; cannot migrate the route",
                         hint="restore it, or move the folder away to start the route afresh") from None
    return {"version": version, "package_id": obj.get("package_id"), "outcome": "packaged", "migrated": True}




def plaintext_files(folder: Path) -> list[tuple[Path, Path, dict[str, Any]]]:
    """(plaintext file, its sealed name, binding) of every plaintext private file in ``folder``."""
    out = [(folder / "novelty" / "seen.json", folder / SEEN_FILE, SEEN_AD),
           (folder / "federation" / "residual.safetensors", folder / RESIDUAL_FILE, RESIDUAL_AD)]
    for p in sorted((folder / "retained").glob("v*.json")) if (folder / "retained").is_dir() else []:
        v = p.stem[1:]
        if v.isdigit():
            name, ad = retained(int(v))
            out.append((p, folder / name, ad))
    return [t for t in out if t[0].is_symlink() or t[0].is_file()]


def migrate_files(folder: Path) -> None:
    """Pre-store files to tagged ones; each step can be repeated after a crash."""
    old_key = folder / "audit-key"
    if old_key.exists():
        if not (folder / "audit-key.json").exists():
            try:
                key = bytes.fromhex(old_key.read_text().strip())
            except (ValueError, UnicodeDecodeError):
                raise InputError(f"audit key {old_key} is damaged; cannot migrate the route",
                                 hint="restore it from a backup") from None
            write_bytes(folder / "audit-key.json", encode({"format": AUDIT_FORMAT, "key": key.hex()}) + b"\n",
                        mode=0o600)
        old_key.unlink()
    history = folder / "novelty" / "history.json"
    if history.exists():
        try:
            digests = json.loads(history.read_text()).get("digests", [])
        except (ValueError, AttributeError, UnicodeDecodeError):
            digests = []
        if not (folder / "novelty" / "seen.json").exists():
            write_bytes(folder / "novelty" / "seen.json",
                        encode({"format": SEEN_FORMAT, "digests": sorted(map(str, digests)), "near": []}) + b"\n",
                        mode=0o600)
        (folder / "novelty" / "history.safetensors").unlink(missing_ok=True)
        history.unlink()
    (folder / "route.json").unlink(missing_ok=True)
