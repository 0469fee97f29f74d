"""Will a DP round learn? The plan's verdict, before any ε is spent.

DP-SGD adds Gaussian noise of std σ·C/B per coordinate to the mean update
(σ: noise multiplier, C: clipping norm, B: expected batch). The signal per
coordinate is the clipped mean gradient's norm over √d (d: LoRA
parameters), measured on public data by runners/learn/probe.py. Their
ratio is the per-step signal-to-noise ratio (SNR). AdamW divides each
coordinate by its running RMS, so under noise a step moves along the signal
by about lr · SNR/√(1 + SNR²) (the *kept* share of a noise-free step) and
every coordinate random-walks by about lr. Two numbers follow:

  travel     steps × lr × kept: how far the round moves along the signal;
  coherence  √steps × kept: how far the summed signal outgrows the noise's
             random walk (a higher learning rate does not raise it: it only
             walks faster, and at a low coherence it wrecks the model).

Likely needs travel ≥ 0.15 and coherence ≥ 2; marginal, 0.08 and 1. The
thresholds are calibrated on the shipped ticket task (docs/privacy.md has
the table): every measured round that met *likely* learned it (77–100%
exact match); every *unlikely* one did not (≤ 8%), among them C = 0.1 with
lr 0.02 on 222 examples (2%, and its forgetting went to +420%). They are a
heuristic for LoRA with AdamW, not a guarantee: the gate still decides.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any, Callable

from tgsp.errors import InputError

from ..learn.probe import GradientScale

UNLIKELY, MARGINAL, LIKELY = "unlikely", "marginal", "likely"
VERDICTS = (UNLIKELY, MARGINAL, LIKELY)  # in order: --require-plan X accepts X and better
LIKELY_TRAVEL, MARGINAL_TRAVEL = 0.15, 0.08
LIKELY_COHERENCE, MARGINAL_COHERENCE = 2.0, 1.0
MAX_LEARNING_RATE = 0.02  # the planner never advises a higher one (AdamW on LoRA diverges beyond)
STEP_FACTORS = (2, 4)  # "more steps at the same ε" tries these multiples


@dataclass(frozen=True)
class Setting:
    """The knobs of one DP round that the verdict depends on."""

    clip: float  # C
    sigma: float  # σ
    batch: int  # B, the expected batch
    steps: int
    learning_rate: float
    examples: int  # N
    epsilon: float  # this round's ε


@dataclass(frozen=True)
class Judged:
    setting: Setting
    noise: float  # per coordinate, on the mean update: σ·C/B
    signal: float  # per coordinate: ‖clipped mean gradient‖/√d
    snr: float
    travel: float

    @property
    def kept(self) -> float:
        """The share of a noise-free step's progress that survives the noise: SNR/√(1 + SNR²)."""
        return self.travel / (self.setting.steps * self.setting.learning_rate)

    @property
    def coherence(self) -> float:
        """√steps × kept: how far the summed signal outgrows the noise's random walk. A low
        coherence is not cured by a higher learning rate: that only walks faster."""
        return math.sqrt(self.setting.steps) * self.kept

    @property
    def verdict(self) -> str:
        if self.travel >= LIKELY_TRAVEL and self.coherence >= LIKELY_COHERENCE:
            return LIKELY
        return MARGINAL if self.travel >= MARGINAL_TRAVEL and self.coherence >= MARGINAL_COHERENCE else UNLIKELY


def judge(scale: GradientScale, s: Setting) -> Judged:
    noise = s.sigma * s.clip / s.batch
    signal = scale.signal(s.clip) / math.sqrt(scale.parameters)
    snr = signal / noise if noise > 0 else math.inf
    kept = 1.0 if math.isinf(snr) else snr / math.sqrt(1.0 + snr * snr)
    return Judged(s, noise, signal, snr, s.steps * s.learning_rate * kept)


def at_least(verdict: str, wanted: str) -> bool:
    return VERDICTS.index(verdict) >= VERDICTS.index(wanted)


Calibrate = Callable[[float, float, int], float]  # (ε, q, steps) -> σ, with the round's accountant and δ


def _one_digit_floor(x: float) -> float:
    """x rounded down to one significant digit (0.137 -> 0.1, 0.0042 -> 0.004)."""
    e = math.floor(math.log10(x))
    return math.floor(x / 10 ** e) * 10 ** e


def _free(scale: GradientScale, now: Judged) -> list[tuple[str, Setting]]:
    """Changes that cost no privacy and need no accountant: C, the learning rate, more examples."""
    s, out = now.setting, []
    low = scale.quantile(0.1)
    clip = _one_digit_floor(low) if low > 0 else s.clip
    if clip < s.clip:
        out.append((f"lower max_grad_norm to {clip:g} (below most per-example gradient norms, median "
                    f"{scale.median():.3g})", replace(s, clip=clip)))
    if now.travel > 0 and s.learning_rate < MAX_LEARNING_RATE:
        lr = min(MAX_LEARNING_RATE, s.learning_rate * LIKELY_TRAVEL * 1.25 / now.travel)
        if lr > s.learning_rate * 1.2:
            out.append((f"raise learning_rate to {lr:.2g}", replace(s, learning_rate=float(f"{lr:.2g}"))))
    need = _examples_needed(now)
    if need is not None:
        out.append((f"give the round about {need:,} examples (now {s.examples:,}) and an expected batch of "
                    f"{math.ceil(s.batch * need / s.examples):,}, the same sample rate",
                    replace(s, examples=need, batch=math.ceil(s.batch * need / s.examples))))
    return out


def _accounted(now: Judged, calibrate: Calibrate, epsilon_left: float | None) -> list[tuple[str, Setting]]:
    """Changes that need the accountant: more steps at the same ε, then a larger ε."""
    s, out = now.setting, []
    q = s.batch / s.examples
    for k in STEP_FACTORS:
        if (sigma := _sigma(calibrate, s.epsilon, q, s.steps * k)) is not None:
            out.append((f"train {k}x the steps ({s.steps * k}) at the same epsilon",
                        replace(s, steps=s.steps * k, sigma=sigma)))
    if epsilon_left is None or epsilon_left > s.epsilon * 1.05:
        eps = s.epsilon * 2 if epsilon_left is None else min(s.epsilon * 2, epsilon_left)
        if (sigma := _sigma(calibrate, eps, q, s.steps)) is not None:
            out.append((f"allow a larger epsilon per round ({eps:.3g}; a privacy decision)",
                        replace(s, epsilon=eps, sigma=sigma)))
    return out


def _together(scale: GradientScale, now: Judged) -> tuple[str, Judged] | None:
    """The free changes in order of cost, each on the last one's result, until the round is likely:
    C, then the learning rate, then (only as many as still needed) more examples."""
    said, at = [], now
    for kind in ("max_grad_norm", "learning_rate", "examples"):
        step = next(((t, st) for t, st in _free(scale, at) if kind in t), None)
        if step is None:
            continue
        said.append(step[0])
        at = judge(scale, step[1])
        if at.verdict == LIKELY:
            break
    return ("; ".join(said), at) if len(said) > 1 else None


def _sigma(calibrate: Calibrate, eps: float, q: float, steps: int) -> float | None:
    """σ for (ε, q, steps), or None where the accountant's calibration range has none."""
    try:
        return calibrate(eps, q, steps)
    except InputError:
        return None


def _examples_needed(now: Judged) -> int | None:
    """N (at the same q, steps and σ: SNR grows with B) that makes the round likely; None if no N can."""
    s = now.setting
    kept = max(LIKELY_TRAVEL / (s.steps * s.learning_rate), LIKELY_COHERENCE / math.sqrt(s.steps)) * 1.05
    if kept >= 1.0 or now.snr <= 0 or math.isinf(now.snr):
        return None
    factor = (kept / math.sqrt(1.0 - kept * kept)) / now.snr
    return math.ceil(s.examples * factor) if factor > 1.0 else None


def outlook(scale: GradientScale, setting: Setting, calibrate: Calibrate | None,
            epsilon_left: float | None) -> dict[str, Any]:
    """The verdict on ``setting``, and the change that would help most: the first single change
    that makes the round likely (cheapest first), else the free ones together, else the single
    change that helps most. Without ``calibrate``, changes that need the accountant are skipped."""
    now = judge(scale, setting)
    advice = None
    if now.verdict != LIKELY:
        free = [(text, judge(scale, s)) for text, s in _free(scale, now)]
        together = _together(scale, now)
        paid = [(text, judge(scale, s)) for text, s in (_accounted(now, calibrate, epsilon_left) if calibrate else [])]
        # Cheapest first: C or the learning rate alone, the free changes together, then more data alone,
        # more steps or a larger epsilon.
        tried = [t for t in free if "examples" not in t[0]] + ([together] if together else []) + \
            [t for t in free if "examples" in t[0]] + paid
        good = [t for t in tried if t[1].verdict == LIKELY]
        advice = good[0] if good else max(tried, key=lambda t: t[1].travel, default=None)
    return {
        "verdict": now.verdict,
        "noise_per_coordinate": _sig(now.noise), "signal_per_coordinate": _sig(now.signal),
        "snr": _sig(now.snr), "travel": _sig(now.travel), "travel_without_noise": _sig(setting.steps * setting.learning_rate),
        "coherence": _sig(now.coherence),
        "thresholds": {"likely": {"travel": LIKELY_TRAVEL, "coherence": LIKELY_COHERENCE},
                       "marginal": {"travel": MARGINAL_TRAVEL, "coherence": MARGINAL_COHERENCE}},
        "gradient_scale": {"examples": scale.examples, "warmup_steps": scale.warmup_steps,
                           "parameters": scale.parameters, "median_norm": _sig(scale.median()),
                           "max_norm": _sig(scale.norms[-1]),
                           "clipped_fraction": round(sum(n > setting.clip for n in scale.norms) / len(scale.norms), 4),
                           "source": "the eval feed (public), after a few non-private steps"},
        "advice": None if advice is None else {"change": advice[0], "verdict": advice[1].verdict,
                                               "travel": _sig(advice[1].travel), "snr": _sig(advice[1].snr),
                                               "coherence": _sig(advice[1].coherence)},
    }


def _sig(x: float) -> float | None:
    return None if math.isinf(x) or math.isnan(x) else float(f"{x:.4g}")
