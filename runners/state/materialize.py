"""Hand the production adapter to a serving engine: a verified, decrypted PEFT folder.

    DIR/<route>-v<version>/     adapter_config.json, adapter_model.safetensors, README.md,
                                .tgflow.json (route, alias, version, package id, index version)
    DIR/<route>                 a link to the folder being served; replaced by rename
    DIR/.tgflow-consumer.json   the consumer state: a replayed, forked or frozen index is refused

The adapter is decrypted file by file straight into a private temporary folder inside DIR
(never anywhere else: in Kubernetes DIR is a memory-backed emptyDir), synced, and renamed
into place; only then does the link move. The folder the link named
before is kept for an instant rollback, older ones are removed. An interruption leaves the
old link and nothing decrypted outside DIR. Nothing here imports torch."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import uuid
from pathlib import Path
from typing import Any

from tgsp.unpack import PayloadReader
from tgsp.atomic import fsync_tree, private_dir, signals_deferred, write_bytes
from tgsp.errors import FormatError, InputError
from tgsp.signing import TrustPolicy

from .registry import Registry

STATE_FILE, META = ".tgflow-consumer.json", ".tgflow.json"
PEFT_FILES = ("adapter_config.json", "adapter_model.safetensors")
MAX_ADAPTER = 64 << 30  # a LoRA adapter is MBs to a few GBs; the --to folder is often memory-backed


def current(dest: Path, route: str) -> dict[str, Any] | None:
    """What DIR/<route> serves now (its .tgflow.json), or None."""
    link = dest / route
    if not link.is_symlink():
        return None
    return _meta(dest / os.readlink(link)) or None


def materialize(registry: Registry, route: str, alias: str, policy: TrustPolicy, identities: list,
                dest: Path) -> dict[str, Any]:
    """Resolve ``alias``, verify, and (if it moved) write and switch to its folder.
    The result says ``changed``, the ``name`` and ``path`` served, and the ``previous`` name."""
    _check_dest(dest, route)
    found, report = registry.resolve_verified(route, alias, policy, dest / STATE_FILE)
    name = f"{route}-v{found['version']}"
    now = current(dest, route)
    result = {"route": route, "alias": alias, "version": found["version"], "package_id": found["package_id"],
              "index_version": found["index_version"], "name": name, "path": str((dest / name).resolve()),
              "previous": now["name"] if now else None, "changed": False}
    if now and now.get("package_id") == found["package_id"] and (dest / name / PEFT_FILES[1]).is_file():
        return result
    meta = {k: result[k] for k in ("route", "alias", "version", "package_id", "index_version", "name")}
    if _intact(dest / name, found, report):  # a rollback to the kept folder reuses it, since it still matches
        write_bytes(dest / name / META, (json.dumps(meta, sort_keys=True) + "\n").encode(), mode=0o640)
    else:
        _check_payload(found, report)
        _write_folder(dest / name, lambda tmp: _decrypt_into(tmp, found, report, identities), meta)
    _switch(dest, route, name)
    _prune(dest, route, keep={name, result["previous"]})
    return {**result, "changed": True, "previous": result["previous"] if result["previous"] != name else None}


def _check_payload(found: dict, report) -> None:
    """A PEFT adapter folder, within what a serving folder holds, before anything is decrypted."""
    listed = {f["path"]: f["size"] for f in report.manifest["files"]}
    missing = [f for f in PEFT_FILES if f not in listed]
    if missing or META in listed:
        raise FormatError(f"version {found['version']} of {found['route']} is not a PEFT adapter folder "
                          f"({'missing: ' + ', '.join(missing) if missing else 'it holds ' + META})")
    if sum(listed.values()) > MAX_ADAPTER:
        raise InputError(f"version {found['version']} of {found['route']} holds {sum(listed.values())} bytes, over "
                         f"the {MAX_ADAPTER}-byte limit of a served adapter")


def _decrypt_into(folder: Path, found: dict, report, identities: list) -> None:
    """The payload decrypted straight into ``folder`` (the private temporary one inside --to)
    from the package ``resolve`` verified: the reader checks it is still that package and each
    file's digests as it decrypts; files stay unnamed until all are written (a SIGKILL leaves
    no named plaintext). Memory does not grow with the adapter."""
    with PayloadReader(found["path"], report, identities) as reader:
        reader.extract_into(folder)


def _intact(folder: Path, found: dict, report) -> bool:
    """The folder holds exactly the plaintext the verified package's signed manifest lists
    (from the report resolve checked, not the file read again), and nothing else."""
    if _meta(folder).get("package_id") != found["package_id"]:
        return False
    listed = report.manifest["files"]
    present = {str(p.relative_to(folder)) for p in folder.rglob("*") if not p.is_dir()}
    if present != {f["path"] for f in listed} | {META}:
        return False
    for f in listed:
        path = folder / f["path"]
        if path.is_symlink() or not path.is_file() or path.stat().st_size != f["size"]:
            return False
        h = hashlib.sha256()
        with open(path, "rb") as fh:
            while chunk := fh.read(1 << 20):
                h.update(chunk)
        if h.hexdigest() != f["sha256"]:
            return False
    return True


def _meta(folder: Path) -> dict:
    try:
        doc = json.loads((folder / META).read_text())
    except (OSError, ValueError):
        return {}
    return doc if isinstance(doc, dict) and (folder / PEFT_FILES[1]).is_file() else {}


def _check_dest(dest: Path, route: str) -> None:
    if dest.is_symlink() or (dest.exists() and not dest.is_dir()):
        raise InputError(f"{dest} is not a folder", hint="--to takes the folder the serving engine reads")
    dest.mkdir(parents=True, exist_ok=True)
    link = dest / route
    if link.exists() and not link.is_symlink():
        raise InputError(f"{link} exists and is not tgflow's link", hint="move it away, or choose another --to folder")


def _write_folder(target: Path, fill, meta: dict) -> None:
    """``fill(tmp)`` writes the files into a private temporary folder beside ``target``, which is
    then synced and renamed into place; on any failure or signal it is removed."""
    if target.is_symlink() or (target.exists() and not target.is_dir()):
        raise InputError(f"{target} is a link or a file where tgflow writes a version's folder",
                         hint="move it away; the --to folder is tgflow's to manage")
    with private_dir(target) as tmp:
        fill(tmp)
        (tmp / META).write_text(json.dumps(meta, sort_keys=True) + "\n")
        os.chmod(tmp, 0o750)
        fsync_tree(tmp)
        with signals_deferred():
            if target.exists():  # a folder of the same version left by an earlier package: replaced
                shutil.rmtree(target)
            os.rename(tmp, target)


def _switch(dest: Path, route: str, name: str) -> None:
    tmp = dest / f".{route}.{uuid.uuid4().hex}.link"
    os.symlink(name, tmp)
    try:
        os.replace(tmp, dest / route)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fd = os.open(dest, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _prune(dest: Path, route: str, keep: set) -> None:
    for p in dest.glob(f"{route}-v*"):
        suffix = p.name[len(route) + 2:]
        if suffix.isdigit() and p.name not in keep and p.is_dir() and not p.is_symlink():
            shutil.rmtree(p, ignore_errors=True)
