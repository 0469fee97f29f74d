"""One round as telemetry sees it (``RoundRecord``), and the part of it that may leave the
process (``public``). Every sink sends only the public view, so this module is the one
place that decides what a privacy mode withholds.

Under DP the training loss, token counts, example counts, the novelty numbers and the
stages' timings (training time tracks the private sample sizes) are private: they are not
covered by the round's ε. They stay out of metrics, params, runs and spans, as they stay out
of ``peft run``'s output. The round's start and end are public (its evidence records them).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .observe import Stage

SUCCESS = ("packaged", "update", "summed")  # a round that wrote its package
MODELS = (("base", "base"), ("production", "previous_release"), ("candidate", "candidate"))
WITHHELD_UNDER_DP = ("training loss", "token counts", "example counts", "novelty scores", "stage timings")


@dataclass
class RoundRecord:
    command: str  # peft-run, fed-aggregate, fed-decrypt
    route: str
    outcome: str  # packaged, update or summed; else the exit code's name (runners/outcomes.py)
    exit_code: int
    started: float  # unix seconds
    ended: float
    stages: list[Stage] = field(default_factory=list)
    report: dict[str, Any] = field(default_factory=dict)
    spec: Any = None  # the RunSpec, when it could be read
    site: str | None = None  # a federated site's signing key
    evidence: list[dict[str, Any]] = field(default_factory=list)  # the round's public evidence events

    @property
    def succeeded(self) -> bool:
        return self.outcome in SUCCESS and self.exit_code == 0

    @property
    def private(self) -> bool:
        """DP: the round trained on private examples under a privacy budget. Unknown counts as private."""
        if (self.report.get("privacy") or {}).get("mode") == "dp":
            return True
        return self.spec is None or bool(self.spec.privacy.trains_with_dp)


@dataclass(frozen=True)
class Public:
    """What may leave the process: every field here is public, or privatized and accounted for."""

    labels: dict[str, str]
    outcome: str
    exit_code: int
    succeeded: bool
    started: float
    ended: float
    stages: list[Stage]
    timed: bool  # the stages' durations may be sent (not under DP)
    examples: dict[str, int]  # seen, selected, novel; empty under DP
    evaluation: dict[str, dict[str, float]]  # base/production/candidate -> exact_match, choice_accuracy, loss
    forgetting: float | None
    privacy: dict[str, float]  # epsilon (this round), route_epsilon, route_budget_epsilon, delta
    info: dict[str, str]  # version, package_id, parent_id
    params: dict[str, str]
    loss_curve: list[tuple[int, float]]  # (step, loss); empty under DP
    withheld: tuple[str, ...]


def public(rec: RoundRecord) -> Public:
    private = rec.private
    labels = {"route": rec.route, "command": rec.command, **({"site": rec.site} if rec.site else {})}
    return Public(labels=labels, outcome=rec.outcome, exit_code=rec.exit_code, succeeded=rec.succeeded,
                  started=rec.started, ended=rec.ended, stages=list(rec.stages), timed=not private,
                  examples={} if private else _examples(rec), evaluation=_evaluation(rec.report),
                  forgetting=_num((rec.report.get("forgetting") or {}).get("forgetting")),
                  privacy=_privacy(rec.report), info=_info(rec.report),
                  params=params(rec.spec) if rec.spec is not None else {},
                  loss_curve=[] if private else _curve(rec.report),
                  withheld=WITHHELD_UNDER_DP if private else ())


def _num(v: Any) -> float | None:
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else None


def _examples(rec: RoundRecord) -> dict[str, int]:
    nov = rec.report.get("novelty") or {}
    out = {"seen": nov.get("examples"), "novel": nov.get("novel")}
    sel = next((e.get("data") for e in rec.evidence if e.get("type") == "tgflow.selection"), None) or {}
    out["selected"] = sel.get("train_examples")
    return {k: int(v) for k, v in out.items() if _num(v) is not None}


def _evaluation(report: dict) -> dict[str, dict[str, float]]:
    ev = report.get("evaluation") or {}
    out: dict[str, dict[str, float]] = {}
    for model, key in MODELS:
        m = ev.get(key) or {}
        vals = {k: _num(m.get(k)) for k in ("exact_match", "choice_accuracy", "loss")}
        if any(v is not None for v in vals.values()):
            out[model] = {k: v for k, v in vals.items() if v is not None}
    return out


def _privacy(report: dict) -> dict[str, float]:
    p = report.get("privacy") or {}
    if p.get("mode") != "dp":
        return {}
    out = {"epsilon": p.get("epsilon"), "route_epsilon": p.get("route_epsilon"),
           "route_budget_epsilon": p.get("route_budget_epsilon"), "delta": p.get("delta")}
    return {k: float(v) for k, v in out.items() if _num(v) is not None}


def _info(report: dict) -> dict[str, str]:
    out = {"version": report.get("version"), "package_id": report.get("package_id"), "parent_id": report.get("parent")}
    return {k: str(v) for k, v in out.items() if v is not None}


def _curve(report: dict) -> list[tuple[int, float]]:
    curve = (report.get("training") or {}).get("loss_curve") or {}
    stride = curve.get("stride") if isinstance(curve.get("stride"), int) and curve.get("stride") > 0 else 1
    return [(k * stride, float(v)) for k, v in enumerate(curve.get("losses") or []) if _num(v) is not None]


def params(spec) -> dict[str, str]:
    """The spec's settings a run tracker compares rounds by: configuration, never data."""
    t, lora, pol, pr = spec.training, spec.lora, spec.policy, spec.privacy
    out: dict[str, Any] = {
        "base_model": spec.base_model_ref, "lora.r": lora.r, "lora.alpha": lora.alpha,
        "lora.target_modules": lora.target_modules if isinstance(lora.target_modules, str) else
        ",".join(lora.target_modules), "training.learning_rate": t.learning_rate,
        "training.steps": t.steps, "training.epochs": t.epochs, "training.batch_size": t.batch_size, "training.seed": t.seed,
        "privacy.mode": pr.mode, "policy.novelty_threshold": pol.novelty_threshold,
        "policy.min_novel_examples": pol.min_novel_examples, "policy.forgetting_budget": pol.forgetting_budget}
    if pr.dp is not None:
        out.update({"dp.target_epsilon": pr.dp.target_epsilon, "dp.target_delta": pr.dp.target_delta,
                    "dp.max_grad_norm": pr.dp.max_grad_norm,
                    "dp.noise_multiplier": pr.dp.noise_multiplier, "dp.route_budget_epsilon": pr.dp.route_budget_epsilon})
    for k, v in pol.gate.model_dump().items():
        out[f"gate.{k}"] = v
    if spec.federation is not None:
        out.update({"federation.round": spec.federation.round, "federation.method": spec.federation.method})
    return {k: str(v) for k, v in out.items() if v is not None}
