"""privacy.mode "dp" for one round: the checks, the plan, and what gets released.

The plan fixes every public parameter of the mechanism before training:
q = B / N (B = batch_size x gradient_accumulation, the spec's expected batch;
N = the round's training examples, treated as public and released in the
evidence), σ (given, or calibrated so the round lands on target_epsilon),
the planned steps, and how many of them fit the route's remaining budget.

What the evidence may say is restricted too: nothing computed from the
private records except through the DP mechanism. Training losses, token
counts and timings are withheld, and digests of private data are keyed
with the route's audit key (HMAC-SHA256), so a published digest cannot be
used to test guesses about the data. See docs/privacy.md.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass, replace
from typing import Any

from tgsp.errors import InputError

from ..learn.dp_sgd import DPConfig
from ..learn.probe import GradientScale
from ..learn.train import total_steps
from ..spec import RunSpec
from . import outlook as outlook_mod
from .accounting import EPSILON_MAX, DpEvent, calibrate, epsilon, max_steps

MECHANISM = ("DP-SGD: Poisson-subsampled Gaussian mechanism; per-example gradients of all LoRA factors "
             "clipped to max_grad_norm by their global L2 norm; noise once per logical batch; "
             "divided by the fixed expected batch size")
ADJACENCY = "add or remove one training example (record-level)"


def check_spec(spec: RunSpec) -> None:
    """Refuse settings that would make the guarantee false, before any work."""
    if spec.training.packing:
        raise InputError("training.packing cannot be combined with privacy.mode \"dp\": per-example clipping needs "
                         "one example per row", hint="set training.packing to false")
    if spec.policy.replay_fraction > 0:
        raise InputError("policy.replay_fraction cannot be combined with privacy.mode \"dp\": replaying earlier rounds' "
                         "private records would spend their epsilon again, outside the ledger", hint="set replay_fraction to 0")
    if spec.eval is None:
        raise InputError("privacy.mode \"dp\" needs an eval feed: the evaluation gate must not read private "
                         "training records", hint="add an eval section with data that is not private (see docs/privacy.md)")


@dataclass(frozen=True)
class DPPlan:
    config: DPConfig
    delta: float
    accountant: str
    planned_steps: int
    allowed_steps: int
    spent_before: list[DpEvent]
    budget: float | None
    sigma_source: str
    examples: int = 0  # N
    outlook: dict[str, Any] | None = None  # runners/privacy/outlook.py: the verdict, once the probe ran

    @property
    def noise_per_coordinate(self) -> float:
        """The noise std on each coordinate of the mean update: σ·C/B."""
        c = self.config
        return c.noise_multiplier * c.max_grad_norm / c.expected_batch

    def event(self, steps: int) -> DpEvent:
        return DpEvent(self.config.noise_multiplier, self.config.sample_rate, steps)

    def summary(self, steps: int, randomness: str) -> dict[str, Any]:
        """The privacy record for evidence and manifest, for ``steps`` taken."""
        this = [self.event(steps)]
        return {
            "mode": "dp", "mechanism": MECHANISM, "adjacency": ADJACENCY,
            "epsilon": round(epsilon(this, self.delta, self.accountant), 6), "delta": self.delta,
            "accountant": self.accountant, "epsilon_rdp": round(epsilon(this, self.delta, "rdp"), 6),
            "noise_multiplier": self.config.noise_multiplier, "noise_multiplier_source": self.sigma_source,
            "sample_rate": self.config.sample_rate, "expected_batch_size": self.config.expected_batch,
            "max_grad_norm": self.config.max_grad_norm, "steps": steps, "planned_steps": self.planned_steps,
            "route_epsilon_before": round(epsilon(self.spent_before, self.delta, self.accountant), 6),
            "route_epsilon": round(epsilon([*self.spent_before, *this], self.delta, self.accountant), 6),
            "route_budget_epsilon": self.budget, "randomness": randomness,
            "noise_per_coordinate": float(f"{self.noise_per_coordinate:.4g}"), "plan": self.outlook}

    def manifest(self, summary: dict[str, Any]) -> dict[str, Any]:
        keys = ("epsilon", "delta", "noise_multiplier", "sample_rate", "steps", "accountant", "route_epsilon",
                "route_budget_epsilon", "max_grad_norm", "expected_batch_size")
        # A test seed makes the noise replayable: the signed record must say so.
        private = not str(summary["randomness"]).startswith("test-seed")
        verdict = (summary.get("plan") or {}).get("verdict")
        return {"mode": "dp", **{k: summary[k] for k in keys}, "noise_per_coordinate": summary["noise_per_coordinate"],
                "plan_verdict": verdict, "private": private, "randomness": summary["randomness"]}

    def judged(self, spec: RunSpec, scale: GradientScale, *, thorough: bool = True) -> DPPlan:
        """This plan with its verdict against ``scale`` (the same accountant and δ for every alternative;
        ``thorough``: also weigh changes that need the accountant, a few seconds each)."""
        c, t = self.config, spec.training
        round_eps = epsilon([self.event(self.planned_steps)], self.delta, self.accountant)
        setting = outlook_mod.Setting(c.max_grad_norm, c.noise_multiplier, c.expected_batch, self.planned_steps,
                                      t.learning_rate, self.examples, round_eps)
        left = None if self.budget is None else self.budget - epsilon(self.spent_before, self.delta, self.accountant)
        sigma_for = lambda eps, q, steps: calibrate(eps, q, steps, self.delta, self.accountant)  # noqa: E731
        return replace(self, outlook=outlook_mod.outlook(scale, setting, sigma_for if thorough else None, left))


def plan(spec: RunSpec, n_train: int, spent: list[DpEvent]) -> DPPlan:
    dp, t = spec.privacy.dp, spec.training
    assert dp is not None
    expected = t.batch_size * t.gradient_accumulation
    if expected > n_train:
        raise InputError(f"privacy.mode \"dp\": the expected batch ({expected} = batch_size x gradient_accumulation) "
                         f"is larger than the {n_train} training examples", hint="lower training.batch_size")
    if dp.target_delta >= 1.0 / n_train:
        raise InputError(f"privacy.dp.target_delta {dp.target_delta:g} is not below 1/N = 1/{n_train}: a mechanism "
                         "that publishes one random record outright would meet it",
                         hint=f"use target_delta <= {0.1 / n_train:.1g} (well below 1/N)")
    q = expected / n_train
    steps = total_steps(t, n_train)
    if dp.noise_multiplier is not None:
        sigma, source = dp.noise_multiplier, "spec"
        # RDP is a cheap upper bound on PRV: screen out meaningless settings before the slow maths.
        rough = epsilon([DpEvent(sigma, q, steps)], dp.target_delta, "rdp")
        if not rough <= EPSILON_MAX:
            raise InputError(f"privacy.dp.noise_multiplier {sigma:g} gives epsilon {rough:.3g} for {steps} steps at "
                             f"sample rate {q:.4g}: no meaningful guarantee (over {EPSILON_MAX:g})",
                             hint="raise noise_multiplier, train fewer steps, or give target_epsilon instead")
    else:
        sigma = calibrate(dp.target_epsilon, q, steps, dp.target_delta, dp.accountant)
        source = f"calibrated to target_epsilon {dp.target_epsilon:g}"
    allowed = max_steps(spent, sigma, q, dp.target_delta, dp.route_budget_epsilon, steps, dp.accountant)
    return DPPlan(DPConfig(dp.max_grad_norm, sigma, q, expected), dp.target_delta, dp.accountant, steps, allowed,
                  list(spent), dp.route_budget_epsilon, source, n_train)


class AuditKey:
    """Keyed digests of private data, with the route's audit key (kept by the route store)."""

    def __init__(self, key: bytes) -> None:
        self.key = key

    def digest(self, sha256_hex: str) -> str:
        return "hmac-sha256:" + hmac.new(self.key, bytes.fromhex(sha256_hex), hashlib.sha256).hexdigest()
