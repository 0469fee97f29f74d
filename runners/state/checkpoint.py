"""Resumable checkpoints: safetensors tensors plus plain JSON, never pickle.

A checkpoint holds the LoRA weights, the AdamW moments and step counts, the
RNG states and the step number. Each one is written to its own folder; a
small pointer file, replaced atomically, names the current one. A crash at
any moment leaves the previous checkpoint intact.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tgsp.atomic import write_bytes
from tgsp.errors import InputError

FORMAT = "tgflow-checkpoint/1"


@dataclass
class Checkpoint:
    step: int
    meta: dict[str, Any]
    params: dict[str, Any]
    optim: dict[str, Any]
    rng: dict[str, Any]


class CheckpointStore:
    def __init__(self, folder: Path) -> None:
        self.folder = folder

    @property
    def pointer(self) -> Path:
        return self.folder / "current.json"

    def save(self, ckpt: Checkpoint) -> None:
        from safetensors.torch import save_file

        self.folder.mkdir(parents=True, exist_ok=True)
        target = self.folder / f"step-{ckpt.step:08d}"
        if target.exists():
            shutil.rmtree(target)
        tmp = self.folder / f".step-{ckpt.step:08d}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        for name, tensors in (("params", ckpt.params), ("optim", ckpt.optim), ("rng", ckpt.rng)):
            save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, str(tmp / f"{name}.safetensors"))
        (tmp / "meta.json").write_text(json.dumps({"format": FORMAT, "step": ckpt.step, **ckpt.meta}, sort_keys=True))
        tmp.rename(target)
        old = self._current_name()
        write_bytes(self.pointer, json.dumps({"current": target.name}).encode())
        if old and old != target.name:
            shutil.rmtree(self.folder / old, ignore_errors=True)

    def _current_name(self) -> str | None:
        try:
            name = json.loads(self.pointer.read_text())["current"]
        except (OSError, ValueError, KeyError, TypeError):
            return None
        return name if isinstance(name, str) and name.startswith("step-") and "/" not in name else None

    def load(self, expect: dict[str, Any]) -> Checkpoint | None:
        """The current checkpoint if its ``meta`` matches ``expect``; else None."""
        from safetensors.torch import load_file

        name = self._current_name()
        if name is None or not (self.folder / name / "meta.json").exists():
            return None
        folder = self.folder / name
        meta = json.loads((folder / "meta.json").read_text())
        if meta.get("format") != FORMAT or any(meta.get(k) != v for k, v in expect.items()):
            return None
        try:
            tensors = {n: load_file(str(folder / f"{n}.safetensors")) for n in ("params", "optim", "rng")}
        except Exception:
            raise InputError(f"checkpoint {folder} is damaged", hint=f"remove {self.folder} to start the round over") from None
        return Checkpoint(int(meta["step"]), meta, tensors["params"], tensors["optim"], tensors["rng"])

    def clear(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)
