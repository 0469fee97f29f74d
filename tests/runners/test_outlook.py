"""The DP plan's verdict (runners/privacy/outlook.py) and its probe (runners/learn/probe.py)."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings, strategies as st

from runners.learn.probe import GradientScale
from runners.privacy import outlook


def scale(norms=(0.2, 0.3, 0.4), clip=1.0, clipped=0.2, direction=0.6, d=10_000) -> GradientScale:
    return GradientScale(len(norms), 5, d, tuple(sorted(norms)), clip, clipped, direction)


def setting(**over) -> outlook.Setting:
    base = dict(clip=1.0, sigma=2.0, batch=32, steps=100, learning_rate=0.002, examples=240, epsilon=3.0)
    return outlook.Setting(**{**base, **over})


def test_noise_per_coordinate_and_travel():
    j = outlook.judge(scale(), setting())
    assert j.noise == pytest.approx(2.0 * 1.0 / 32)
    assert j.signal == pytest.approx(0.2 / 100)
    snr = j.signal / j.noise
    assert j.snr == pytest.approx(snr)
    assert j.travel == pytest.approx(100 * 0.002 * snr / math.sqrt(1 + snr * snr))
    assert j.verdict == outlook.UNLIKELY


def test_without_noise_the_travel_is_steps_times_learning_rate():
    j = outlook.judge(scale(), setting(sigma=0.0))
    assert j.travel == pytest.approx(0.2) and j.verdict == outlook.LIKELY


def test_a_clip_below_every_norm_uses_the_direction_mean():
    s = scale()
    assert s.signal(0.1) == pytest.approx(0.1 * 0.6)  # every example clipped: C times the mean direction
    assert s.signal(1.0) == pytest.approx(0.2)  # the measured point
    assert 0.1 * 0.6 <= s.signal(0.25) <= 0.2


@settings(max_examples=60, deadline=None)
@given(sigma=st.floats(0.3, 50), batch=st.integers(1, 4096), lr=st.floats(1e-5, 0.05), steps=st.integers(1, 5000))
def test_more_noise_never_helps(sigma, batch, lr, steps):
    a = outlook.judge(scale(), setting(sigma=sigma, batch=batch, learning_rate=lr, steps=steps))
    b = outlook.judge(scale(), setting(sigma=sigma * 1.5, batch=batch, learning_rate=lr, steps=steps))
    assert b.travel <= a.travel and outlook.at_least(a.verdict, b.verdict)


def test_verdict_order():
    assert outlook.at_least("likely", "marginal") and outlook.at_least("marginal", "marginal")
    assert not outlook.at_least("unlikely", "marginal") and not outlook.at_least("marginal", "likely")


def test_advice_names_a_change_that_makes_the_round_likely():
    s = setting(learning_rate=0.01)  # T·lr = 1: noise is what holds it back
    out = outlook.outlook(scale(), s, None, None)
    assert out["verdict"] == outlook.UNLIKELY
    assert out["advice"]["verdict"] == outlook.LIKELY, out["advice"]
    assert "max_grad_norm" in out["advice"]["change"] or "examples" in out["advice"]["change"]


def test_more_examples_is_computed_to_reach_likely():
    s = setting(learning_rate=0.01)
    now = outlook.judge(scale(), s)
    n = outlook._examples_needed(now)
    assert n is not None and n > s.examples
    bigger = outlook.judge(scale(), outlook.Setting(s.clip, s.sigma, math.ceil(s.batch * n / s.examples), s.steps,
                                                   s.learning_rate, n, s.epsilon))
    assert bigger.verdict == outlook.LIKELY


def test_accounted_changes_use_the_calibration():
    calls = []

    def calibrate(eps, q, steps):
        calls.append((eps, q, steps))
        return 2.0 * math.sqrt(steps / 100) * 3.0 / eps

    out = outlook.outlook(scale(), setting(), calibrate, epsilon_left=7.0)
    assert {(3.0, 32 / 240, 200), (3.0, 32 / 240, 400), (6.0, 32 / 240, 100)} <= set(calls)
    assert out["advice"] is not None


def test_one_digit_floor():
    assert outlook._one_digit_floor(0.137) == pytest.approx(0.1)
    assert outlook._one_digit_floor(0.0042) == pytest.approx(0.004)
    assert outlook._one_digit_floor(3.9) == pytest.approx(3)


def test_the_probe_leaves_the_model_as_it_found_it(tiny_model):
    """Weights, gradients and the RNG are restored: a round after the probe is the round without it."""
    import torch

    from runners.learn import model as model_mod, probe
    from runners.learn.batches import tokenize
    from runners.data.feeds import Example
    from runners.learn.train import add_lora
    from runners.spec import LoraSpec

    tok, model = model_mod.load(tiny_model, model_mod.pick_device("fp32"))
    model = add_lora(model, LoraSpec(r=4, alpha=8), seed=3)
    data = tokenize(tok, [Example(f"Ticket #{i}: the VPN fails.\nResolution:", " Restart it.") for i in range(12)], 64)
    before = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    torch.manual_seed(11)
    rng = torch.get_rng_state()
    got = probe.measure(model, tok, data, clip=0.1, rows=4, learning_rate=0.01, device="cpu", seed=3)
    assert torch.equal(torch.get_rng_state(), rng)
    for n, p in model.named_parameters():
        if p.requires_grad:
            assert torch.equal(p, before[n]) and p.grad is None, n
    assert got.examples == 6 and len(got.norms) == 6 and got.parameters == sum(v.numel() for v in before.values())
    assert all(n > 0 for n in got.norms) and got.norms == tuple(sorted(got.norms))
    assert 0 < got.clipped_mean_norm <= 0.1 + 1e-9  # the mean of vectors of norm <= C
    assert 0 < got.direction_mean_norm <= 1 + 1e-9
