"""Stage 5, evaluation: the new adapter against the base model and against
the route's production adapter, on the same data, with task-level metrics;
then the forgetting budget and the gate."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any

from tgsp.errors import ForgettingExceeded, GateFailed

from ..learn import metrics
from ..learn.batches import tokenize
from ..learn.evaluate import mean_loss, relative_change
from .inputs import Inputs
from .select import Selection
from .update import Update


@dataclass
class Evaluation:
    evaluation: dict[str, Any]
    forgetting: dict[str, Any]

    @property
    def report(self) -> dict[str, Any]:
        return {"evaluation": self.evaluation, "forgetting": self.forgetting}


@contextlib.contextmanager
def _as(model, which: str):
    """Run ``model`` as the base model, the parent adapter, or the new one ("default")."""
    if which == "base":
        with model.disable_adapter():
            yield model
        return
    model.set_adapter(which)
    try:
        yield model
    finally:
        model.set_adapter("default")


def _measure(rnd, i: Inputs, u: Update, sel: Selection, which: str) -> dict[str, Any]:
    max_len = rnd.spec.training.max_seq_len
    with _as(u.model, which) as m:
        out = {"eval": metrics.measure(m, i.tok, sel.eval, i.device.name, max_len),
               "reference_loss": mean_loss(m, i.tok, tokenize(i.tok, i.reference.examples, max_len), i.device.name),
               "earlier": {v: metrics.measure(m, i.tok, held, i.device.name, max_len) for v, held in sel.earlier}}
    return out


def evaluate(rnd, i: Inputs, sel: Selection, u: Update) -> Evaluation:
    with rnd.stage("evaluating the adapters"):
        base = _measure(rnd, i, u, sel, "base")
        parent = _measure(rnd, i, u, sel, "parent") if i.parent else None
        after = _measure(rnd, i, u, sel, "default")
    ev = _gate(rnd, base, parent, after)
    rnd.record("tgflow.evaluation", ev)
    forget = _forgetting(rnd, i, base, parent, after)
    rnd.record("tgflow.forgetting", forget)
    result = Evaluation(ev, forget)
    report = {"novelty": sel.summary, "training": u.result.metrics(private=not rnd.mode.uses_history),
              **result.report, "privacy": u.privacy}
    if not forget["passed"]:
        rnd.checkpoints.clear()
        rnd.reject(ForgettingExceeded, f"forgetting {forget['forgetting']:.4f} against the "
                   f"{'previous release' if parent else 'base model'} exceeds the budget {forget['budget']}", report,
                   _FORGETTING if rnd.mode.uses_history else _FORGETTING_DP)
    if ev["reasons"]:
        rnd.checkpoints.clear()
        rnd.reject(GateFailed, "evaluation gate failed: " + "; ".join(ev["reasons"]), report,
                   _gate_remedy(ev, rnd.spec.privacy.trains_with_dp))
    return result


_FORGETTING = ("try policy.replay_fraction 0.5-1 (earlier rounds' data trained again), or fewer steps or a lower "
               "learning rate; raise policy.forgetting_budget only if that drift is acceptable")
_FORGETTING_DP = ("try fewer steps or a lower learning rate (replay is not available under dp); raise "
                  "policy.forgetting_budget only if that drift is acceptable")


def _gate_remedy(ev: dict[str, Any], dp: bool) -> str:
    if any("against the production adapter" in r for r in ev["reasons"]):
        return ("it is worse than production on the eval set: try policy.replay_fraction (keeps what earlier rounds "
                "taught) or more training.steps; route eval shows both adapters side by side")
    if dp:
        return ("under dp the noise is the usual cause: tgflow peft budget shows sigma; more examples, a smaller "
                "privacy.dp.max_grad_norm (e.g. 0.1) or a higher learning rate help (docs/privacy.md)")
    return "it did not learn enough: try more training.steps or a higher training.learning_rate, or more examples"


def _gate(rnd, base: dict, parent: dict | None, after: dict) -> dict[str, Any]:
    gate = rnd.spec.policy.gate
    b, a = base["eval"], after["eval"]
    improvement = -relative_change(b["loss"], a["loss"])
    reasons = []
    if gate.max_eval_loss is not None and a["loss"] > gate.max_eval_loss:
        reasons.append(f"eval loss {a['loss']:.4f} > max_eval_loss {gate.max_eval_loss}")
    if gate.min_eval_improvement is not None and improvement < gate.min_eval_improvement:
        reasons.append(f"eval improvement {improvement:.4f} < min_eval_improvement {gate.min_eval_improvement}")
    for key in ("exact_match", "choice_accuracy"):
        floor = getattr(gate, f"min_{key}")
        if floor is not None and a.get(key, 0.0) < floor:
            reasons.append(f"{key.replace('_', ' ')} {a.get(key, 0.0):.4f} < min_{key} {floor}")
    regression = metrics.regression(parent["eval"], a) if parent else {}
    if parent and gate.max_regression is not None:
        reasons += [f"{k.replace('_', ' ')} fell {v:.4f} against the production adapter (max_regression "
                    f"{gate.max_regression})" for k, v in regression.items() if v > gate.max_regression + 1e-9]
    return {"eval_examples": a["examples"], "eval_loss_before": b["loss"], "eval_loss_after": a["loss"],
            "eval_improvement": round(improvement, 6), "exact_match": a.get("exact_match"),
            "choice_accuracy": a.get("choice_accuracy"), "base": b, "previous_release": parent and parent["eval"],
            "candidate": a, "regression_vs_previous_release": regression, "gate": gate.model_dump(mode="json"),
            "passed": not reasons, "reasons": reasons}


def _regression(before: dict[str, Any], after: dict[str, Any]) -> float:
    """Forgetting on an earlier round's held-out set: the largest drop of a task metric
    (exact match, choice accuracy); the relative loss rise where it has none (plain text)."""
    drops = metrics.regression(before, after)
    return round(max(drops.values()) if drops else relative_change(before["loss"], after["loss"]), 6)


def _forgetting(rnd, i: Inputs, base: dict, parent: dict | None, after: dict) -> dict[str, Any]:
    against = parent or base
    vs_prev = relative_change(against["reference_loss"], after["reference_loss"])
    earlier = {str(v): _regression(against["earlier"][v], after["earlier"][v]) for v in after["earlier"]}
    worst = max([vs_prev, *earlier.values()])
    budget = rnd.spec.policy.forgetting_budget
    return {"reference_examples": len(i.reference.examples), "against": "previous release" if parent else "base model",
            "reference_loss_base": round(base["reference_loss"], 6),
            "reference_loss_before": round(against["reference_loss"], 6),
            "reference_loss_after": round(after["reference_loss"], 6), "reference_forgetting": round(vs_prev, 6),
            "earlier_heldout_forgetting": earlier, "forgetting": round(worst, 6),
            "earlier_heldout": {str(v): {"before": against["earlier"][v], "after": m} for v, m in after["earlier"].items()},
            "forgetting_vs_base": round(relative_change(base["reference_loss"], after["reference_loss"]), 6),
            "budget": budget, "passed": worst <= budget}
