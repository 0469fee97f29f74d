"""Resumable checkpoints, sealed at rest: safetensors tensors plus plain JSON, never pickle.

A checkpoint holds the LoRA weights, the AdamW moments and step counts, the
RNG states and the step number. Each is one sealed file (tgsp/sealed.py)
encrypted to the route's recipient keys and bound to the route, the round
(the digest of the round's fingerprint: spec, data, base model, production
adapter) and the step. A small pointer, signed by the round's signing key
and replaced atomically, names the current file and its SHA-256. A crash at
any moment leaves the previous checkpoint intact; the plaintext exists only
in memory.

Plaintext checkpoints of earlier tgflow versions (a folder per step) are sealed on
first use and their plaintext deleted.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tgsp import dsse
from tgsp.atomic import write_bytes
from tgsp.canonical import encode, is_int, parse, sha256_hex
from tgsp.errors import FormatError, InputError, SignatureError
from tgsp.inputfile import open_regular, read_input

from .keys import StateKeys

FORMAT = "tgflow-checkpoint/2"
POINTER_FORMAT = "tgflow.checkpoint-pointer/1"
POINTER_TYPE = "application/vnd.tgflow.checkpoint-pointer+json"
_FILE = re.compile(r"^step-[0-9]{8}\.sealed$")
_PARTS = ("params", "optim", "rng")
META = "tgflow"  # the safetensors metadata entry holding the checkpoint's JCS metadata
MAX_SAFETENSORS_HEADER = 100 << 20  # the safetensors library's own limit
MAX_POINTER = 1 << 20
MAX_CHECKPOINT = 64 << 30


@dataclass
class Checkpoint:
    step: int
    meta: dict[str, Any]
    params: dict[str, Any]
    optim: dict[str, Any]
    rng: dict[str, Any]


def round_id(fingerprint: dict[str, Any]) -> str:
    return sha256_hex(encode(fingerprint))


class CheckpointStore:
    """``load`` first: it names the round (the fingerprint) that later ``save`` calls belong to."""

    def __init__(self, folder: Path, keys: StateKeys) -> None:
        self.folder, self.keys = Path(folder), keys
        self.round: str | None = None
        self.resumed: dict[str, Any] | None = None  # {"step", "checkpoint_sha256"} once resumed
        self.ignored: str | None = None  # why a checkpoint found here was not resumed

    @property
    def pointer(self) -> Path:
        return self.folder / "current.json"

    # --- writing --------------------------------------------------------------------------
    def save(self, ckpt: Checkpoint) -> None:
        if self.round is None:
            raise RuntimeError("CheckpointStore.save before load: the round is not named")
        blob = self.keys.seal(_serialize(ckpt), {"kind": "checkpoint", "round": self.round, "step": ckpt.step})
        self.folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        name = f"step-{ckpt.step:08d}.sealed"
        write_bytes(self.folder / name, blob, mode=0o600)
        old = self._files() - {name}
        payload = encode({"format": POINTER_FORMAT, "route": self.keys.route, "round": self.round,
                          "step": ckpt.step, "file": name, "size": len(blob),
                          "sha256": hashlib.sha256(blob).hexdigest()})
        env = dsse.Envelope(POINTER_TYPE, payload, tuple(self.keys.sign(POINTER_TYPE, payload)))
        write_bytes(self.pointer, encode(env.to_dict()) + b"\n", mode=0o600)
        for n in old:
            (self.folder / n).unlink(missing_ok=True)

    def clear(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)

    def _files(self) -> set[str]:
        return {p.name for p in self.folder.glob("step-*.sealed")} if self.folder.is_dir() else set()

    # --- reading ----------------------------------------------------------------------------
    def load(self, expect: dict[str, Any]) -> Checkpoint | None:
        """The current checkpoint if it belongs to the round ``expect`` fingerprints; None if there
        is none or it belongs to another start of the round (``ignored`` says which)."""
        self.round = round_id(expect)
        self._migrate(expect)
        if not self.pointer.exists():
            return None
        ptr = self._pointer()
        if ptr["round"] != self.round:
            self.ignored = (f"the checkpoint at step {ptr['step']} belongs to another start of this "
                            "round (the spec, the training data, the base model or the production adapter changed); "
                            "training starts over")
            return None
        path = self.folder / ptr["file"]
        blob = _read(path, ptr["size"])
        digest = hashlib.sha256(blob).hexdigest()
        if digest != ptr["sha256"]:
            raise InputError(f"checkpoint {path} is not the one its signed pointer names (SHA-256 differs)",
                             hint=f"delete {self.folder} to start the round over")
        plain = self.keys.open(blob, {"kind": "checkpoint", "round": self.round, "step": ptr["step"]}, "checkpoint",
                               path)
        ckpt = _deserialize(plain, path, self.folder)
        if ckpt.step != ptr["step"] or ckpt.meta.get("format") != FORMAT:
            raise InputError(f"checkpoint {path} does not match its pointer", hint=f"delete {self.folder} to start "
                             "the round over")
        self.resumed = {"step": ckpt.step, "checkpoint_sha256": digest}
        return ckpt

    def _pointer(self) -> dict[str, Any]:
        why = None
        try:
            env = dsse.parse(parse(read_input(self.pointer, "checkpoint pointer", max_bytes=MAX_POINTER),
                                   what="checkpoint pointer"), expect_type=POINTER_TYPE)
            self.keys.verify(POINTER_TYPE, env.payload, env.sig_map())
            ptr = parse(env.payload, what="checkpoint pointer", canonical=True)
        except SignatureError as exc:
            why = f"it is not signed by this round's signing key ({exc}): written by another key or tampered with"
        except FormatError as exc:
            why = f"it is malformed ({exc})"
        if why is None and not _valid(ptr):
            why = "its fields are malformed"
        if why is None and ptr["route"] != self.keys.route:
            why = f"it belongs to route {ptr['route']!r}"
        if why is not None:
            raise InputError(f"checkpoint pointer {self.pointer} is refused: {why}",
                             hint=f"if you rotated the signing key or moved the folder, delete {self.folder} to "
                                  "start the round over; otherwise find out who wrote it")
        return ptr

    # --- plaintext from earlier versions ------------------------------------------------------
    def _migrate(self, expect: dict[str, Any]) -> None:
        """Plaintext checkpoints of earlier tgflow versions are deleted, never resumed: nothing
        authenticates them, so whoever can write this folder could plant one to be signed."""
        if not self.folder.is_dir():
            return
        legacy = sorted(p for p in self.folder.glob("step-*") if p.is_dir() or p.is_symlink())
        legacy += sorted(self.folder.glob(".step-*.tmp"))
        if not legacy:
            return
        if _legacy_pointer(self.pointer):
            self.pointer.unlink()
        for p in legacy:
            if p.is_symlink() or not p.is_dir():
                p.unlink(missing_ok=True)
            else:
                shutil.rmtree(p, ignore_errors=True)
        self.ignored = ("a plaintext checkpoint of an earlier tgflow was deleted unread (nothing authenticates it); "
                        "training starts over")


def _read(path: Path, size: int) -> bytes:
    """The checkpoint file the pointer names: a regular file (no link, no FIFO) of the size the
    signed pointer gives, checked before a byte is read; read whole (it is decrypted in memory)."""
    with open_regular(path, "checkpoint", missing=InputError,
                      hint=f"restore it, or delete {path.parent} to start the round over") as f:
        if os.fstat(f.fileno()).st_size != size:
            raise InputError(f"checkpoint {path} is not the regular file of {size} bytes its signed pointer names",
                             hint=f"delete {path.parent} to start the round over")
        return f.read(size)


def _valid(ptr: Any) -> bool:
    return (isinstance(ptr, dict) and set(ptr) == {"format", "route", "round", "step", "file", "size", "sha256"}
            and is_int(ptr["size"]) and 0 < ptr["size"] <= MAX_CHECKPOINT
            and ptr["format"] == POINTER_FORMAT and isinstance(ptr["route"], str) and isinstance(ptr["round"], str)
            and is_int(ptr["step"]) and ptr["step"] >= 0 and isinstance(ptr["file"], str)
            and bool(_FILE.match(ptr["file"])) and isinstance(ptr["sha256"], str))


def _serialize(ckpt: Checkpoint) -> bytes:
    from safetensors.torch import save

    tensors = {f"{part}/{k}": v.detach().cpu().contiguous()
               for part in _PARTS for k, v in getattr(ckpt, part).items()}
    # The metadata rides in the safetensors header, so the payload is one blob that loads without a copy.
    meta = encode({**ckpt.meta, "format": FORMAT, "step": ckpt.step}).decode("utf-8")
    return save(tensors, metadata={META: meta})


def _deserialize(plain: bytes, path: Path, folder: Path) -> Checkpoint:
    from safetensors.torch import load

    try:
        meta = parse(_header(plain)["__metadata__"][META].encode("utf-8"), what="checkpoint meta")
        parts: dict[str, dict[str, Any]] = {p: {} for p in _PARTS}
        for key, value in load(plain).items():
            part, name = key.split("/", 1)
            parts[part][name] = value
        return Checkpoint(int(meta["step"]), meta, parts["params"], parts["optim"], parts["rng"])
    except Exception:
        raise InputError(f"checkpoint {path} is damaged", hint=f"delete {folder} to start the round over") from None


def _header(blob: bytes) -> dict[str, Any]:
    """A safetensors header (u64 little-endian length, then JSON), which holds the metadata:
    the library's in-memory load does not return it, and a checkpoint is never a plaintext file."""
    n = int.from_bytes(blob[:8], "little")
    if not 0 < n <= MAX_SAFETENSORS_HEADER or len(blob) < 8 + n:
        raise ValueError("bad safetensors header")
    return json.loads(blob[8:8 + n])


def _legacy_pointer(path: Path) -> bool:
    try:
        obj = json.loads(read_input(path, "checkpoint pointer", max_bytes=MAX_POINTER))
    except (InputError, ValueError, OSError):
        return False
    return isinstance(obj, dict) and set(obj) == {"current"}
