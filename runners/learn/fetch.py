"""`tgflow model fetch`: bring a base model to an air-gapped machine.

On a connected machine, ``fetch`` takes a model from the Hugging Face Hub
(or from the local Hugging Face cache, when ``HF_HUB_OFFLINE=1``) and writes
a self-contained folder: the safetensors weights, configs and tokenizer
files only (pickled weights and remote code are left out), plus
``tgflow-model.json`` with the id, the exact revision and the SHA-256 of
every file. Copy the folder over and name it in ``base_model_ref``;
``peft run`` checks every recorded digest before it loads the model.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import os
from pathlib import Path
from typing import Any

from tgsp import clock
from tgsp.atomic import fsync_tree, private_dir
from tgsp.canonical import parse
from tgsp.errors import InputError, NotFoundError

MANIFEST = "tgflow-model.json"
FORMAT = "tgflow-model/1"
ALLOW = ("*.safetensors", "*.json", "tokenizer*", "*.model", "*.tiktoken", "merges.txt", "vocab.txt")
REFUSE = ("*.bin", "*.pt", "*.pth", "*.pkl", "*.ckpt", "*.py", "*.msgpack", "*.h5")


def _wanted(rel: str) -> bool:
    name = rel.rsplit("/", 1)[-1]
    return any(fnmatch.fnmatch(name, p) for p in ALLOW) and not any(fnmatch.fnmatch(name, p) for p in REFUSE)


def _copy_hashed(src: Path, dst: Path) -> str:
    h = hashlib.sha256()
    dst.parent.mkdir(parents=True, exist_ok=True)
    with open(src, "rb") as fin, open(dst, "xb") as fout:
        while chunk := fin.read(4 << 20):
            h.update(chunk)
            fout.write(chunk)
    return h.hexdigest()


def _snapshot(model_id: str, revision: str | None) -> Path:
    from huggingface_hub import snapshot_download

    offline = os.environ.get("HF_HUB_OFFLINE", "") not in ("", "0")
    try:
        return Path(snapshot_download(model_id, revision=revision, allow_patterns=list(ALLOW),
                                      ignore_patterns=list(REFUSE), local_files_only=offline))
    except Exception as exc:  # hub errors are many and vary by version; name the model and the cause
        where = "the local Hugging Face cache" if offline else "the Hugging Face Hub"
        raise NotFoundError(f"cannot fetch {model_id!r} from {where}: {str(exc).splitlines()[0][:160]}",
                            hint="check the id (and HF_TOKEN for gated models); offline, pre-fill the cache") from None


def fetch(model_id: str, out: Path, revision: str | None = None) -> dict[str, Any]:
    """Write ``out`` (a new folder) holding the model and its digests; return the record."""
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise InputError(f"{out} exists and is not an empty folder", hint="choose a new folder")
    snap = _snapshot(model_id, revision)
    files = sorted(str(p.relative_to(snap)) for p in snap.rglob("*") if p.is_file() and _wanted(str(p.relative_to(snap))))
    if not any(f.endswith(".safetensors") for f in files):
        raise InputError(f"{model_id!r} has no .safetensors weights; pickled weights are refused")
    with private_dir(out) as tmp:
        digests = {rel: _copy_hashed(snap / rel, tmp / rel) for rel in files}
        record = {"type": FORMAT, "id": model_id, "revision": snap.name if revision is None else revision,
                  "snapshot": snap.name, "fetched_at": clock.fmt(clock.utcnow()), "files": digests}
        (tmp / MANIFEST).write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")
        fsync_tree(tmp)
        if out.exists():
            out.rmdir()
        os.replace(tmp, out)
    return record


def check_fetched(folder: Path, known: dict[str, str]) -> None:
    """If ``folder`` came from ``fetch``, every recorded file must still match.
    ``known`` holds digests already computed (so weights are hashed once)."""
    path = folder / MANIFEST
    if not path.is_file():
        return
    try:
        record = parse(path.read_bytes(), what=str(path))
    except Exception:
        raise InputError(f"{path} is not a readable model record", hint="fetch the model again") from None
    if not isinstance(record, dict) or record.get("type") != FORMAT or not isinstance(record.get("files"), dict):
        raise InputError(f"{path} is not a {FORMAT} record")
    for rel, want in sorted(record["files"].items()):
        got = known.get(rel) or _sha256(folder / rel)
        if got != want:
            raise InputError(f"base model file {rel} does not match the digest recorded when it was fetched",
                             hint="copy the model folder again (or fetch it again)")


def _sha256(path: Path) -> str | None:
    if not path.is_file():
        return None
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(4 << 20):
            h.update(chunk)
    return h.hexdigest()


