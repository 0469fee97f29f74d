"""The accountant against Google's dp-accounting (an independent implementation)."""

from __future__ import annotations

import pytest

dpa = pytest.importorskip("dp_accounting")

from runners.privacy.accounting import DpEvent, calibrate, epsilon, max_steps, merge  # noqa: E402
from tgsp.errors import InputError  # noqa: E402


def _reference(events, delta, kind):
    acc = dpa.pld.PLDAccountant() if kind == "pld" else dpa.rdp.RdpAccountant()
    for s, q, n in events:
        acc.compose(dpa.PoissonSampledDpEvent(q, dpa.GaussianDpEvent(s)), n)
    return acc.get_epsilon(delta)


TABLE = [  # (events, delta)
    ([(1.0, 0.01, 1000)], 1e-5),  # the issue's example: PLD/PRV ~1.83, RDP ~2.10
    ([(0.8, 0.05, 200)], 1e-5),
    ([(1.5, 0.02, 2000)], 1e-6),
    ([(2.0, 0.25, 40)], 1e-5),
    ([(0.6, 0.1, 50)], 1e-5),
    ([(4.0, 1.0, 1)], 1e-5),  # a plain Gaussian mechanism
    ([(1.0, 0.01, 1000), (0.8, 0.05, 300), (1.2, 0.02, 500)], 1e-5),  # three rounds of one route
]


@pytest.mark.parametrize("events,delta", TABLE)
def test_prv_matches_dp_accounting_pld_within_1_percent(events, delta):
    ours = epsilon([DpEvent(*e) for e in events], delta, "prv")
    ref = _reference(events, delta, "pld")
    assert abs(ours / ref - 1) < 0.01, (ours, ref)
    assert ours >= ref * 0.999  # the PRV bound is an upper bound: never meaningfully below the PLD estimate


@pytest.mark.parametrize("events,delta", TABLE)
def test_rdp_matches_dp_accounting_rdp_within_1_percent(events, delta):
    ours = epsilon([DpEvent(*e) for e in events], delta, "rdp")
    ref = _reference(events, delta, "rdp")
    assert abs(ours / ref - 1) < 0.01, (ours, ref)


def test_the_issue_reference_values():
    events = [DpEvent(1.0, 0.01, 1000)]
    assert epsilon(events, 1e-5, "prv") == pytest.approx(1.83, rel=0.01)
    assert epsilon(events, 1e-5, "rdp") == pytest.approx(2.10, rel=0.01)


def test_merging_is_composition():
    parts = [DpEvent(1.0, 0.02, 100), DpEvent(1.0, 0.02, 150), DpEvent(1.0, 0.02, 0)]
    assert merge(parts) == [DpEvent(1.0, 0.02, 250)]
    assert epsilon(parts, 1e-5) == epsilon([DpEvent(1.0, 0.02, 250)], 1e-5)
    assert epsilon([], 1e-5) == 0.0


@pytest.mark.parametrize("target,q,steps", [(1.0, 0.05, 200), (3.0, 0.01, 1000), (8.0, 0.1, 100), (0.5, 0.02, 300),
                                            (3.0, 128 / 9130, 40), (3.0, 256 / 9130, 150)])
def test_calibration_hits_the_target_within_1_percent(target, q, steps):
    """Never above the target, and not far below it (a larger σ than needed is noise for nothing)."""
    sigma = calibrate(target, q, steps, 1e-5)
    eps = epsilon([DpEvent(sigma, q, steps)], 1e-5)
    assert target * 0.99 <= eps <= target
    assert _reference([(sigma, q, steps)], 1e-5, "pld") == pytest.approx(target, rel=0.01)


def test_calibration_refuses_impossible_targets():
    with pytest.raises(InputError, match="out of reach"):
        calibrate(0.001, 0.5, 10_000, 1e-5)
    with pytest.raises(InputError, match="too loose"):
        calibrate(10_000.0, 0.01, 10, 1e-5)


def test_max_steps_is_the_largest_count_within_budget():
    spent = [DpEvent(1.0, 0.05, 60)]
    n = max_steps(spent, 1.0, 0.05, 1e-5, 3.0, 500)
    assert 0 < n < 500
    assert epsilon([*spent, DpEvent(1.0, 0.05, n)], 1e-5) <= 3.0
    assert epsilon([*spent, DpEvent(1.0, 0.05, n + 1)], 1e-5) > 3.0
    assert max_steps(spent, 1.0, 0.05, 1e-5, 100.0, 500) == 500
    assert max_steps(spent, 1.0, 0.05, 1e-5, 0.1, 500) == 0
    assert max_steps(spent, 1.0, 0.05, 1e-5, None, 500) == 500

