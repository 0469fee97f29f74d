"""Compression of update tensors: block-wise 8-bit quantization, and top-k
sparsification with error feedback. Pure numpy; no I/O.

An encoded tensor is a small dict of arrays, stored as safetensors:

    shape  int64[ndim]        the tensor's shape
    mask   uint8[ceil(n/8)]   top-k only: which flat positions are sent, one bit each (numpy packbits order)
    q      int8[m]            int8-block: round(v / scale); m = k values sent (every value without top-k)
    scale  float32[ceil(m/block)]  int8-block: max |v| / 127 of each block of ``block`` values
    values float32[k]         quantize "none": the values themselves

Per-block scales matter: with one scale per tensor, the few large values of an
update set the step and the many small ones round to zero (27.8% error measured);
one scale per 256 values keeps it at 0.7-1.8% (docs/federated.md#compression).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

MAX_ELEMENTS = 1 << 31
MAX_ABS = 1e6  # a delta per value: far above any trained one, far below float32 overflow


class CodecError(ValueError):
    """An encoded tensor that does not decode (wrong sizes, indices out of range, non-finite scales)."""


@dataclass(frozen=True)
class Codec:
    quantize: str = "int8-block"  # or "none"
    block: int = 256
    topk: float | None = None

    @classmethod
    def from_spec(cls, c) -> Codec:
        return cls(c.quantize, c.block, c.topk)

    def to_dict(self) -> dict:
        return {"quantize": self.quantize, "block": self.block, "topk": self.topk}


def _quantize(v: np.ndarray, block: int) -> dict[str, np.ndarray]:
    pad = (-len(v)) % block
    blocks = np.concatenate([v, np.zeros(pad, np.float32)]).reshape(-1, block) if len(v) else np.zeros((0, block), np.float32)
    scale = (np.abs(blocks).max(axis=1) / 127.0).astype(np.float32)
    safe = np.where(scale > 0, scale, 1.0).astype(np.float32)
    q = np.clip(np.rint(blocks / safe[:, None]), -127, 127).astype(np.int8)
    return {"q": q.reshape(-1)[: len(v)].copy(), "scale": scale}


def _dequantize(q: np.ndarray, scale: np.ndarray, block: int, n: int) -> np.ndarray:
    if q.dtype != np.int8 or scale.dtype != np.float32 or q.ndim != 1 or scale.ndim != 1:
        raise CodecError("int8-block parts must be int8 values and float32 scales")
    if len(q) != n or len(scale) != -(-n // block):
        raise CodecError(f"{len(q)} int8 values and {len(scale)} scales do not hold {n} values in blocks of {block}")
    if not np.isfinite(scale).all() or (np.abs(scale) > MAX_ABS / 127).any():
        raise CodecError(f"a block scale is not finite or over {MAX_ABS / 127:g} (values over {MAX_ABS:g})")
    padded = np.concatenate([q, np.zeros(len(scale) * block - n, np.int8)]).astype(np.float32)
    return (padded.reshape(-1, block) * scale[:, None]).reshape(-1)[:n] if n else np.zeros(0, np.float32)


def encode(t: np.ndarray, codec: Codec, residual: np.ndarray | None = None) -> tuple[dict[str, np.ndarray], np.ndarray | None]:
    """Encode ``t`` (float32). With top-k, ``residual`` (what earlier updates left out) is added
    first, and the new residual (everything not sent, quantization error included) is returned."""
    flat = np.ascontiguousarray(t, dtype=np.float32).reshape(-1)
    if residual is not None:
        flat = flat + residual.reshape(-1)
    parts: dict[str, np.ndarray] = {"shape": np.asarray(t.shape, dtype=np.int64)}
    if codec.topk is not None:
        k = max(1, math.ceil(codec.topk * len(flat))) if len(flat) else 0
        keep = np.zeros(len(flat), bool)
        keep[np.argpartition(np.abs(flat), len(flat) - k)[len(flat) - k:] if k else []] = True
        parts["mask"], values = np.packbits(keep), flat[keep]
    else:
        values = flat
    parts.update(_quantize(values, codec.block) if codec.quantize == "int8-block" else {"values": values.copy()})
    if codec.topk is None:
        return parts, None
    return parts, (flat - decode(parts, codec).reshape(-1)).astype(np.float32)


def decode(parts: dict[str, np.ndarray], codec: Codec) -> np.ndarray:
    """The float32 tensor ``parts`` encodes; CodecError for anything inconsistent."""
    shape = parts.get("shape")
    if shape is None or shape.dtype != np.int64 or shape.ndim != 1 or len(shape) > 4 or (shape < 0).any():
        raise CodecError("shape must be at most 4 non-negative int64 sizes")
    n = int(np.prod(shape, dtype=np.int64))
    if n > MAX_ELEMENTS:
        raise CodecError(f"tensor of {n} values is over the limit")
    keep = _mask(parts.get("mask"), n) if codec.topk is not None else None
    k = n if keep is None else int(keep.sum())
    expected = {"shape", "q", "scale"} if codec.quantize == "int8-block" else {"shape", "values"}
    if set(parts) != expected | ({"mask"} if codec.topk is not None else set()):
        raise CodecError(f"encoded tensor has parts {sorted(parts)}, expected {sorted(expected)}")
    if codec.quantize == "int8-block":
        values = _dequantize(parts["q"], parts["scale"], codec.block, k)
    else:
        values = parts["values"]
        if values.dtype != np.float32 or values.shape != (k,) or not np.isfinite(values).all() \
                or (np.abs(values) > MAX_ABS).any():
            raise CodecError(f"values must be {k} finite float32 numbers of at most {MAX_ABS:g}")
    if codec.topk is None:
        return values.reshape(tuple(int(s) for s in shape))
    out = np.zeros(n, np.float32)
    out[keep] = values
    return out.reshape(tuple(int(s) for s in shape))


def _mask(mask: np.ndarray | None, n: int) -> np.ndarray:
    if mask is None or mask.dtype != np.uint8 or mask.shape != ((n + 7) // 8,):
        raise CodecError(f"a top-k mask must be {(n + 7) // 8} uint8 bytes (one bit per value)")
    bits = np.unpackbits(mask)
    if bits[n:].any():
        raise CodecError("a top-k mask sets bits past the end of the tensor")
    return bits[:n].astype(bool)


def stored_bytes(parts: dict[str, np.ndarray]) -> int:
    return sum(a.nbytes for a in parts.values())
