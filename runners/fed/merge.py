"""Merging LoRA updates, one module at a time (pure torch; no I/O).

Averaging A and B separately is not the average of the updates: the mean of
Bᵢ·Aᵢ is not (mean B)·(mean A). ``exact`` forms M = Σ wᵢ·Bᵢ·Aᵢ and
re-factorizes it by truncated SVD to the output rank; ``ffa`` (FFA-LoRA: A
frozen, only B trained) averages B, which is exact because every site shares A.

Memory: the caller streams one module of one site at a time. For a module, exact
keeps either the stacked factors (while K·r < min(d_out, d_in): cheaper, still
exact) or one dense d_out × d_in sum; it never holds more than that dense sum,
whatever the number of sites.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterable


@dataclass
class Merged:
    B: object  # torch.Tensor (d_out, rank), float32
    A: object  # torch.Tensor (rank, d_in), float32
    truncation_error: float  # ||M - B·A||_F / ||M||_F (0 when nothing was cut)
    rank_of_sum: int  # singular values above float64 noise


class MergeError(ValueError):
    """Updates whose factors do not fit together (shapes, a changed frozen A)."""


def exact(parts: Iterable[tuple[float, object, object]], sites: int, rank: int) -> Merged:
    """Σ wᵢ·Bᵢ·Aᵢ over ``parts`` (w, B, A), re-factorized to ``rank`` as B' = U√S, A' = √S·Vᵀ."""
    import torch

    stacked_b, stacked_a, dense, shape = [], [], None, None
    for w, B, A in parts:
        B, A = B.to(torch.float64), A.to(torch.float64)
        shape = _check_shape(shape, B, A)
        if sites * A.shape[0] < min(shape):
            stacked_b.append(w * B)
            stacked_a.append(A)
        else:
            dense = w * (B @ A) if dense is None else dense.addmm_(B, A, alpha=w)
    if shape is None:
        raise MergeError("no updates to merge")
    if dense is not None and stacked_b:
        raise MergeError("updates of one module have different ranks")
    if dense is not None:
        U, S, Vh = torch.linalg.svd(dense, full_matrices=False)
    else:
        U, S, Vh = _svd_of_product(torch.cat(stacked_b, dim=1), torch.cat(stacked_a, dim=0))
    return _truncate(U, S, Vh, rank, shape)


def _check_shape(shape, B, A) -> tuple[int, int]:
    if B.ndim != 2 or A.ndim != 2 or B.shape[1] != A.shape[0]:
        raise MergeError(f"factors of shapes {tuple(B.shape)} and {tuple(A.shape)} do not multiply")
    here = (B.shape[0], A.shape[1])
    if shape is not None and here != shape:
        raise MergeError(f"an update's module is {here}, another's {shape}")
    return here


def _svd_of_product(Bc, Ac):
    """SVD of Bc·Ac without forming it: QR of both factors, SVD of the small core."""
    import torch

    Qb, Rb = torch.linalg.qr(Bc)
    Qa, Ra = torch.linalg.qr(Ac.T)
    U, S, Vh = torch.linalg.svd(Rb @ Ra.T)
    return Qb @ U, S, Vh @ Qa.T


def _truncate(U, S, Vh, rank: int, shape: tuple[int, int]) -> Merged:
    import torch

    total = float((S ** 2).sum())
    kept = min(rank, len(S))
    cut = float((S[kept:] ** 2).sum())
    root = S[:kept].sqrt()
    B = torch.zeros(shape[0], rank, dtype=torch.float64)
    A = torch.zeros(rank, shape[1], dtype=torch.float64)
    B[:, :kept] = U[:, :kept] * root
    A[:kept] = root[:, None] * Vh[:kept]
    noise = (float(S[0]) if len(S) else 0.0) * max(shape) * 1e-15
    return Merged(B.float(), A.float(), math.sqrt(cut / total) if total > 0 else 0.0, int((S > noise).sum()))


def ffa(parts: Iterable[tuple[float, object, object]], frozen_a) -> Merged:
    """Σ wᵢ·Bᵢ with A frozen: Σ wᵢ·Bᵢ·A = (Σ wᵢ·Bᵢ)·A exactly."""
    import torch

    total, shape = None, None
    for w, B, A in parts:
        shape = _check_shape(shape, B, A)
        if not torch.equal(A, frozen_a):
            raise MergeError("an ffa update changed the frozen A factor")
        total = w * B.to(torch.float64) if total is None else total.add_(B.to(torch.float64), alpha=w)
    if total is None:
        raise MergeError("no updates to merge")
    return Merged(total.float(), frozen_a.float().clone(), 0.0, min(frozen_a.shape))
