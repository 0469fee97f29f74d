"""What rank 0 sends the other ranks of a round (runners/distributed/ranks.py), as bytes: msgpack
for the structure and safetensors for tensors. Never pickle, even between our own ranks:
the process group is plain TCP, and a follower decodes only these three messages.

    {"kind": "job", ...}            the training job (data, settings, start, DP, checkpoint)
    {"kind": "not-trained"}         rank 0 ended the round before training
    {"kind": "code", "code": int}   the round's exit code
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import msgpack

from tgsp.errors import InputError

from ..learn.batches import Tokenized
from ..learn.dp_sgd import DPConfig
from ..state.checkpoint import Checkpoint


@dataclass
class Job:
    """The training job rank 0 sends right before training (runners/distributed/ranks.py)."""

    data: list
    training: dict[str, Any]
    lora: dict[str, Any]
    start: dict[str, Any]  # trainable tensor name -> tensor (CPU)
    dp: Any  # DPConfig or None
    limit: int | None
    fingerprint: dict[str, Any]
    checkpoint: Any  # the Checkpoint to resume from, or None


def _tensors(blob: dict[str, Any]) -> bytes:
    from safetensors.torch import save

    return save({k: v.detach().cpu().contiguous() for k, v in blob.items()})


def _untensors(raw: bytes) -> dict[str, Any]:
    from safetensors.torch import load

    return load(raw)


def encode_job(job) -> bytes:
    ckpt = job.checkpoint
    return msgpack.packb({
        "kind": "job", "data": [[t.input_ids, t.labels] for t in job.data], "training": job.training,
        "lora": job.lora, "start": _tensors(job.start), "dp": None if job.dp is None else asdict(job.dp),
        "limit": job.limit, "fingerprint": job.fingerprint,
        "checkpoint": None if ckpt is None else {"step": ckpt.step, "meta": ckpt.meta, "params": _tensors(ckpt.params),
                                                 "optim": _tensors(ckpt.optim), "rng": _tensors(ckpt.rng)},
    }, use_bin_type=True)


def encode_code(code: int) -> bytes:
    return msgpack.packb({"kind": "code", "code": int(code)})


NOT_TRAINED_KIND = "not-trained"  # what decode returns for NOT_TRAINED
NOT_TRAINED = msgpack.packb({"kind": NOT_TRAINED_KIND})


def decode(raw: bytes):
    """A Job, the string "not-trained", or an exit code (int)."""
    try:
        msg = msgpack.unpackb(raw, raw=False, strict_map_key=True)
        kind = msg.get("kind") if isinstance(msg, dict) else None
        if kind == "code" and isinstance(msg.get("code"), int):
            return msg["code"]
        if kind == NOT_TRAINED_KIND:
            return NOT_TRAINED_KIND
        if kind == "job":
            c = msg["checkpoint"]
            ckpt = None if c is None else Checkpoint(c["step"], c["meta"], _untensors(c["params"]),
                                                     _untensors(c["optim"]), _untensors(c["rng"]))
            return Job([Tokenized(ids, labels) for ids, labels in msg["data"]], msg["training"], msg["lora"],
                       _untensors(msg["start"]), None if msg["dp"] is None else DPConfig(**msg["dp"]), msg["limit"],
                       msg["fingerprint"], ckpt)
    except Exception:  # noqa: BLE001 - msgpack and safetensors raise many kinds; all mean the same here
        pass
    raise InputError("a rank received a message from rank 0 that it cannot read",
                     hint="every node must run the same tgflow version")
