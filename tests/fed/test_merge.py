"""LoRA merging: exact equals Σ wᵢ·Bᵢ·Aᵢ before truncation (both the stacked and the dense
path), truncation reports its error, ffa is exact, and FedAvg of factors is not."""

from __future__ import annotations

import pytest
import torch

from runners.fed.merge import MergeError, exact, ffa


def _sites(k: int, r: int, d_out: int, d_in: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return [(w, torch.randn(d_out, r, generator=g), torch.randn(r, d_in, generator=g))
            for w in torch.softmax(torch.randn(k, generator=g), 0).tolist()]


def _target(parts):
    return sum(w * (B.double() @ A.double()) for w, B, A in parts)


@pytest.mark.parametrize("k,r,d_out,d_in", [(3, 4, 64, 48), (16, 8, 32, 32), (5, 2, 7, 200)])
def test_exact_at_full_rank_equals_the_weighted_sum(k, r, d_out, d_in):
    parts = _sites(k, r, d_out, d_in)
    rank = min(k * r, d_out, d_in)
    m = exact(iter(parts), k, rank)
    target = _target(parts)
    assert float((m.B.double() @ m.A.double() - target).abs().max()) < 1e-5 * float(target.abs().max())
    assert m.truncation_error < 1e-6 and m.B.shape == (d_out, rank) and m.A.shape == (rank, d_in)


def test_truncation_keeps_the_best_rank_r_part_and_reports_what_it_cut():
    parts = _sites(4, 4, 40, 30, seed=1)
    target = _target(parts)
    m = exact(iter(parts), 4, 4)
    S = torch.linalg.svdvals(target)
    best = float(S[4:].pow(2).sum().sqrt() / S.pow(2).sum().sqrt())  # Eckart-Young: nothing does better
    got = float((m.B.double() @ m.A.double() - target).norm() / target.norm())
    assert abs(got - best) < 1e-5 and abs(m.truncation_error - best) < 1e-5 and m.rank_of_sum == 16


def test_fedavg_of_factors_is_not_the_mean_of_the_updates():
    parts = _sites(3, 4, 32, 32, seed=2)
    target = _target(parts)
    mean_b = sum(w * B for w, B, _ in parts)
    mean_a = sum(w * A for w, _, A in parts)
    assert float((mean_b.double() @ mean_a.double() - target).norm() / target.norm()) > 0.3


def test_ffa_averages_b_under_a_shared_frozen_a_exactly():
    g = torch.Generator().manual_seed(3)
    a = torch.randn(4, 16, generator=g)
    parts = [(w, torch.randn(8, 4, generator=g), a.clone()) for w in (0.2, 0.3, 0.5)]
    m = ffa(iter(parts), a)
    assert torch.equal(m.A, a)
    assert float((m.B.double() @ m.A.double() - _target(parts)).abs().max()) < 1e-6
    with pytest.raises(MergeError, match="changed the frozen A"):
        ffa(iter([(1.0, torch.zeros(8, 4), a + 1e-3)]), a)


def test_shapes_that_do_not_fit_are_refused():
    with pytest.raises(MergeError):
        exact(iter([(1.0, torch.zeros(8, 4), torch.zeros(3, 5))]), 1, 4)
    with pytest.raises(MergeError):
        exact(iter([(0.5, torch.zeros(8, 4), torch.zeros(4, 5)), (0.5, torch.zeros(9, 4), torch.zeros(4, 5))]), 2, 4)
    with pytest.raises(MergeError):
        exact(iter([]), 0, 4)


def test_a_zero_sum_merges_to_zero_without_dividing_by_it():
    m = exact(iter([(1.0, torch.zeros(8, 2), torch.zeros(2, 6))]), 1, 2)
    assert m.truncation_error == 0.0 and not m.B.any() and not m.A.any()
