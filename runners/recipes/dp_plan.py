"""`tgflow privacy plan`: a DP round's mechanism, cost and verdict, before training.

It opens the spec, the feeds and the route's ledger as the round would,
counts the examples the round would train on, fixes σ with the round's own
accountant, and probes the gradient scale of the round's start (the
production adapter, or a fresh LoRA) on the eval feed, which a DP round
requires to be public. It takes no lock, charges no ε and writes nothing.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any, Callable

import tgsp
from tgsp.errors import InputError

from ..privacy import plan as privacy
from ..privacy.ledger import Ledger
from ..stages import inputs as inputs_stage, select as select_stage, update as update_stage
from ..stages.context import registry_for
from ..stages.inputs import open_round


def plan_round(spec_path: str | Path, keyring: tgsp.Keyring, passphrase: Callable[[], str], *,
               input_root: Path | None = None, output_root: Path | None = None) -> dict[str, Any]:
    opened = open_round(spec_path, input_root, output_root)
    spec = opened.spec
    if not spec.privacy.trains_with_dp:
        raise InputError(f"privacy.mode is {spec.privacy.mode!r} without dp: there is no DP mechanism to plan",
                         hint="the planner is for privacy.mode \"dp\" (or n2he with a dp section)")
    inputs_stage.check_round(spec, keyring)
    prepared = inputs_stage.prepare(opened, keyring)
    ledger = Ledger.load(opened.state, spec.route_key)
    n = len(select_stage.dp_training_set(prepared.feed.examples, prepared.eval_feed.examples))
    plan = privacy.plan(spec, n, ledger.events())
    parent = inputs_stage.parent_of(spec, registry_for(opened, keyring), keyring, passphrase, prepared.model_id)
    i = inputs_stage.load_inputs(spec, prepared, parent, lambda _name: contextlib.nullcontext())
    start = update_stage.begin(spec, i)
    plan = plan.judged(spec, update_stage.probe(spec, i, prepared.eval_feed.examples, start)(plan.config.max_grad_norm))
    return _report(spec, plan, ledger, parent)


def _report(spec, plan: privacy.DPPlan, ledger: Ledger, parent) -> dict[str, Any]:
    summary = plan.summary(plan.planned_steps, "n/a")
    spent = summary["route_epsilon_before"]
    return {
        "route": spec.route_key, "ledger": str(ledger.path),
        "start": f"production adapter, version {parent.version}" if parent else "a fresh LoRA on the base model",
        "examples": plan.examples, "sample_rate": plan.config.sample_rate,
        "expected_batch_size": plan.config.expected_batch, "noise_multiplier": plan.config.noise_multiplier,
        "noise_multiplier_source": plan.sigma_source, "max_grad_norm": plan.config.max_grad_norm,
        "learning_rate": spec.training.learning_rate, "planned_steps": plan.planned_steps,
        "steps_within_budget": plan.allowed_steps, "epsilon": summary["epsilon"], "delta": plan.delta,
        "accountant": plan.accountant, "route_epsilon_before": spent, "route_budget_epsilon": plan.budget,
        "remaining_epsilon": None if plan.budget is None else round(max(0.0, plan.budget - spent), 6),
        "route_epsilon_after": summary["route_epsilon"], **plan.outlook}
