"""Privacy accounting for DP-SGD: the (ε, δ) of Poisson-subsampled Gaussian steps.

Every DP event is (σ, q, steps): ``steps`` compositions of the Gaussian
mechanism with noise multiplier σ on a Poisson sample of rate q. A route's
events compose across rounds; composition is commutative, so events with the
same (σ, q) merge into one, which keeps the PRV composition short.

Two accountants, both from Opacus (see docs/adr/0006-dp-sgd.md):
  prv  the privacy random variable accountant (Gopi et al. 2021); returns the
       upper end of its error interval, so it never under-reports. Default.
  rdp  Rényi DP (Mironov 2017); a looser upper bound, reported as a cross-check.
ε is checked against Google's ``dp-accounting`` PLD and RDP in the tests.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Iterable, Sequence

from tgsp.errors import InputError

ACCOUNTANTS = ("prv", "rdp")
SIGMA_MIN, SIGMA_MAX = 0.3, 100.0  # the calibration range for target_epsilon
EPSILON_MAX = 100.0  # above this a round's bound says nothing (and PRV maths gets slow): refused
_RDP_ORDERS = [1 + x / 10.0 for x in range(1, 100)] + list(range(12, 64)) + [80, 128, 256, 512, 1024]


@dataclass(frozen=True)
class DpEvent:
    sigma: float
    q: float
    steps: int

    def to_json(self) -> dict:
        return {"noise_multiplier": self.sigma, "sample_rate": self.q, "steps": self.steps}

    @classmethod
    def from_json(cls, obj: dict) -> DpEvent:
        """Parse a stored event; ValueError unless σ > 0, 0 < q <= 1 and steps >= 0 (all finite)."""
        raw_sigma, raw_q, steps = obj["noise_multiplier"], obj["sample_rate"], obj["steps"]
        if type(raw_sigma) not in (int, float) or type(raw_q) not in (int, float):  # JSON true is not a number
            raise ValueError(f"invalid DP event {obj!r}")
        sigma, q = float(raw_sigma), float(raw_q)
        if not (math.isfinite(sigma) and sigma > 0 and 0 < q <= 1 and type(steps) is int and steps >= 0):
            raise ValueError(f"invalid DP event {obj!r}")
        return cls(sigma, q, steps)


def merge(events: Iterable[DpEvent]) -> list[DpEvent]:
    """Sum the steps of events with the same (σ, q); drop empty ones."""
    steps: dict[tuple[float, float], int] = {}
    for e in events:
        if e.steps > 0:
            steps[(e.sigma, e.q)] = steps.get((e.sigma, e.q), 0) + e.steps
    return [DpEvent(s, q, n) for (s, q), n in sorted(steps.items())]


def epsilon(events: Sequence[DpEvent], delta: float, accountant: str = "prv") -> float:
    """ε at ``delta`` for the composition of ``events`` (0 when there are none)."""
    history = [(e.sigma, e.q, e.steps) for e in merge(events)]
    if not history:
        return 0.0
    if any(s <= 0 for s, _, _ in history):
        return math.inf
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # numpy log(0) inside the PRV domain maths, harmless
        if accountant == "rdp":
            from opacus.accountants import RDPAccountant

            acc = RDPAccountant()
            acc.history = history
            return float(acc.get_epsilon(delta, alphas=_RDP_ORDERS))
        if accountant != "prv":
            raise InputError(f"unknown accountant {accountant!r}; use one of {', '.join(ACCOUNTANTS)}")
        from opacus.accountants import PRVAccountant

        acc = PRVAccountant()
        acc.history = history
        eps = float(acc.get_epsilon(delta, eps_error=0.01))
        if eps < 1.25:  # the PRV error is absolute (0.01); tighten it for small ε so it stays within 0.5%
            acc = PRVAccountant()
            acc.history = history
            eps = float(acc.get_epsilon(delta, eps_error=max(0.0005, eps * 0.004)))
        return eps


def calibrate(target: float, q: float, steps: int, delta: float, accountant: str = "prv") -> float:
    """The smallest σ (within 0.5% of ε) whose round ε does not exceed ``target``.

    ε falls monotonically with σ. A doubling search from σ = 1 brackets the answer, then
    regula falsi (Illinois) on log ε against log σ closes in: a handful of accountant calls,
    where bisection over [SIGMA_MIN, SIGMA_MAX] took about twenty (the PRV maths is slow at
    both ends of that range)."""
    eps = lambda s: epsilon([DpEvent(s, q, steps)], delta, accountant)  # noqa: E731
    lo, hi = _bracket(eps, target, q, steps)  # eps(lo) > target >= eps(hi)
    f = lambda x: math.log(eps(math.exp(x)) / target)  # noqa: E731  (falls with x = log σ; 0 at the answer)
    x_lo, x_hi = math.log(lo), math.log(hi)
    f_lo, f_hi = f(x_lo), f(x_hi)
    close = math.log(0.995)  # eps(σ) within 0.5% below the target
    side = 0
    for _ in range(60):
        if f_hi >= close or x_hi - x_lo < math.log(1.0001):
            break
        x = x_hi - f_hi * (x_hi - x_lo) / (f_hi - f_lo)
        if not x_lo < x < x_hi:
            x = (x_lo + x_hi) / 2
        fx = f(x)
        if fx > 0:
            x_lo, f_lo = x, fx
            f_hi = f_hi / 2 if side == -1 else f_hi  # Illinois: the end kept twice counts for half
            side = -1
        else:
            x_hi, f_hi = x, fx
            f_lo = f_lo / 2 if side == 1 else f_lo
            side = 1
    return math.exp(x_hi)


def _bracket(eps, target: float, q: float, steps: int) -> tuple[float, float]:
    """(lo, hi) with eps(lo) > target >= eps(hi), doubling or halving from σ = 1 within
    [SIGMA_MIN, SIGMA_MAX]; the two ends of that range give the errors."""
    s = 1.0
    if eps(s) > target:
        while True:
            nxt = min(s * 2, SIGMA_MAX)
            if eps(nxt) <= target:
                return s, nxt
            if nxt == SIGMA_MAX:
                raise InputError(f"privacy.dp.target_epsilon {target} is out of reach: even noise_multiplier "
                                 f"{SIGMA_MAX:g} gives epsilon {eps(SIGMA_MAX):.3g} for {steps} steps at sample rate "
                                 f"{q:.4g}", hint="allow a larger target_epsilon, or train fewer steps")
            s = nxt
    while True:
        nxt = max(s / 2, SIGMA_MIN)
        if eps(nxt) > target:
            return nxt, s
        if nxt == SIGMA_MIN:
            raise InputError(f"privacy.dp.target_epsilon {target} is too loose to calibrate: noise_multiplier "
                             f"{SIGMA_MIN} already gives epsilon {eps(SIGMA_MIN):.3g}",
                             hint="set a smaller target_epsilon, or give noise_multiplier directly")
        s = nxt


def max_steps(spent: Sequence[DpEvent], sigma: float, q: float, delta: float, budget: float | None,
              wanted: int, accountant: str = "prv") -> int:
    """The most steps (at most ``wanted``) of (σ, q) that keep the route's ε within ``budget``."""
    if budget is None:
        return wanted
    fits = lambda n: epsilon([*spent, DpEvent(sigma, q, n)], delta, accountant) <= budget  # noqa: E731
    if fits(wanted):
        return wanted
    if not fits(1):
        return 0
    lo, hi = 1, wanted  # fits(lo), not fits(hi)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if fits(mid) else (lo, mid)
    return lo
