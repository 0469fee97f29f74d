"""What rank 0 sends the other ranks of a round (runners/distributed/ranks.py), as bytes: msgpack
for the structure and safetensors for tensors. Never pickle, even between our own ranks:
the process group is plain TCP, and a follower decodes only these three messages.

    {"kind": "job", ...}            the training job (data, settings, start, DP, checkpoint)
    {"kind": "not-trained"}         rank 0 ended the round before training
    {"kind": "code", "code": int}   the round's exit code
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any

import msgpack

from tgsp.errors import InputError

from .. import outcomes
from ..learn.batches import IGNORE, Tokenized
from ..learn.dp_sgd import DPConfig
from ..state.checkpoint import Checkpoint

MAX_TOKEN = (1 << 31) - 1  # token ids and labels are int32 in every tokenizer we load


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


class _Bad(Exception):
    """A field of a message is not what rank 0 sends."""


def _is_int(v: Any, lo: int, hi: int) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and lo <= v <= hi


def _need(ok: bool) -> None:
    if not ok:
        raise _Bad


def _tokens(data: Any) -> list:
    _need(isinstance(data, list))
    out = []
    for row in data:
        _need(isinstance(row, list) and len(row) == 2)
        ids, labels = row
        _need(isinstance(ids, list) and isinstance(labels, list) and len(ids) == len(labels) > 0)
        _need(all(_is_int(t, 0, MAX_TOKEN) for t in ids)
              and all(_is_int(t, 0, MAX_TOKEN) or (t == IGNORE and _is_int(t, IGNORE, IGNORE)) for t in labels))
        out.append(Tokenized(ids, labels))
    return out


def _dp(d: Any) -> DPConfig | None:
    if d is None:
        return None
    _need(isinstance(d, dict) and set(d) == {f.name for f in fields(DPConfig)})
    _need(all(isinstance(d[k], (int, float)) and not isinstance(d[k], bool) and math.isfinite(d[k]) and d[k] >= 0
              for k in ("max_grad_norm", "noise_multiplier", "sample_rate")) and 0 < d["sample_rate"] <= 1)
    _need(_is_int(d["expected_batch"], 1, MAX_TOKEN))
    return DPConfig(**d)


def _generator_states(raw: Any) -> dict[str, Any]:
    """Generator states are handed to set_state: 1-D uint8 tensors only."""
    import torch

    states = _untensors(raw)
    _need(all(t.dtype == torch.uint8 and t.dim() == 1 for t in states.values()))
    return states


def _checkpoint(c: Any) -> Checkpoint | None:
    if c is None:
        return None
    _need(isinstance(c, dict) and set(c) == {"step", "meta", "params", "optim", "rng"})
    _need(_is_int(c["step"], 0, 1 << 40) and isinstance(c["meta"], dict))
    return Checkpoint(c["step"], c["meta"], _untensors(c["params"]), _untensors(c["optim"]), _generator_states(c["rng"]))


def _job(msg: dict) -> Job:
    _need(set(msg) == {"kind", "data", "training", "lora", "start", "dp", "limit", "fingerprint", "checkpoint"})
    _need(isinstance(msg["training"], dict) and isinstance(msg["lora"], dict) and isinstance(msg["fingerprint"], dict))
    _need(msg["limit"] is None or _is_int(msg["limit"], 0, 1 << 40))
    return Job(_tokens(msg["data"]), msg["training"], msg["lora"], _untensors(msg["start"]), _dp(msg["dp"]),
               msg["limit"], msg["fingerprint"], _checkpoint(msg["checkpoint"]))


def decode(raw: bytes):
    """A Job, the string "not-trained", or an exit code (an int of the one table): every field
    type-checked, anything else refused in one line."""
    try:
        msg = msgpack.unpackb(raw, raw=False, strict_map_key=True)
        kind = msg.get("kind") if isinstance(msg, dict) else None
        if kind == "code" and set(msg) == {"kind", "code"} and _is_int(msg["code"], 0, 255) \
                and msg["code"] in outcomes.BY_CODE:
            return msg["code"]
        if kind == NOT_TRAINED_KIND and set(msg) == {"kind"}:
            return NOT_TRAINED_KIND
        if kind == "job":
            return _job(msg)
    except Exception:  # noqa: BLE001 - msgpack, safetensors and our checks raise many kinds; all mean the same here
        pass
    raise InputError("a rank received a message from rank 0 that it cannot read",
                     hint="every node must run the same tgflow version")
