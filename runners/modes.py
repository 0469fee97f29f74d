"""Privacy modes: how a round plans its mechanism and what its update may reveal.

A mode plugs in at two stages: *plan* (before training: check the spec,
charge a ledger, fix the mechanism's parameters) and *update* (what the
trainer runs with, what the evidence may say about training, how the round
is settled). ``off`` and ``dp`` are here; a mode is one class.
"""

from __future__ import annotations

from typing import Any, Protocol

from tgsp import clock
from tgsp.canonical import encode, sha256_hex
from tgsp.errors import BudgetExhausted, InputError

from . import privacy
from .dp_sgd import DPRandom
from .ledger import Ledger
from .train import DPRun, TrainResult


class PrivacyMode(Protocol):
    name: str
    uses_history: bool  # may the route's history (seen data, retained data, per-example losses) steer selection?

    def private(self, sha256_hex: str) -> str: ...

    def plan(self, rnd, n_train: int, fingerprint: dict) -> None: ...

    def trainer(self, device: str) -> tuple[DPRun | None, int | None]: ...

    def training_record(self, result: TrainResult, record: dict[str, Any]) -> dict[str, Any]: ...

    def finish(self, rnd, result: TrainResult) -> dict[str, Any]: ...

    def settle(self, rnd, outcome: str) -> None: ...

    def manifest(self, record: dict[str, Any]) -> dict[str, Any]: ...


class Off:
    name, uses_history = "off", True

    def private(self, sha256_hex: str) -> str:
        return sha256_hex

    def plan(self, rnd, n_train: int, fingerprint: dict) -> None:
        return None

    def trainer(self, device: str) -> tuple[DPRun | None, int | None]:
        return None, None

    def training_record(self, result: TrainResult, record: dict[str, Any]) -> dict[str, Any]:
        return record

    def finish(self, rnd, result: TrainResult) -> dict[str, Any]:
        record = {"mode": "off", "note": "no differential privacy: the adapter may memorise training examples"}
        rnd.record("tgflow.privacy", record)
        return record

    def settle(self, rnd, outcome: str) -> None:
        return None

    def manifest(self, record: dict[str, Any]) -> dict[str, Any]:
        return {"mode": "off"}


class DP:
    """DP-SGD with the route's write-ahead privacy ledger (docs/privacy.md)."""

    name, uses_history = "dp", False

    def __init__(self, spec, store) -> None:
        self.spec, self.ledger = spec, Ledger.load(store.folder, spec.route_key)  # fail closed before any work
        self.audit = privacy.AuditKey(store.audit_key())
        self.plan_: privacy.DPPlan | None = None
        self.round_id, self.charged, self.run = "", False, None

    def private(self, sha256_hex: str) -> str:
        return self.audit.digest(sha256_hex)

    def plan(self, rnd, n_train: int, fingerprint: dict) -> None:
        self.round_id = sha256_hex(encode(fingerprint))
        own = self.ledger.pending(self.round_id)  # a resumed round's own charge is not "spent before"
        spent = [ev for e in self.ledger.entries if e is not own for ev in self.ledger.events_of(e)]
        plan = self.plan_ = privacy.plan(self.spec, n_train, spent)
        if plan.allowed_steps == 0:
            self._refuse(rnd, plan)
        self.ledger.begin(self.round_id, plan.event(plan.allowed_steps), {
            "started": clock.fmt(rnd.started), "planned_steps": plan.planned_steps, "delta": plan.delta,
            "accountant": plan.accountant, "max_grad_norm": plan.config.max_grad_norm,
            "expected_batch_size": plan.config.expected_batch, "sample_rate": plan.config.sample_rate,
            "processes": rnd.world.size if rnd.world is not None else 1, "spec_sha256": rnd.opened.digest})
        self.charged = True

    def _refuse(self, rnd, plan: privacy.DPPlan) -> None:
        record = {**plan.summary(0, "none"), "refused": True}
        rnd.record("tgflow.privacy", record)
        message = (f"privacy budget exhausted: the route has spent epsilon {record['route_epsilon_before']:.4g} of "
                   f"{plan.budget:g}, and not one more step at noise_multiplier {plan.config.noise_multiplier:.4g} fits")
        self.ledger.refuse(self.round_id, {"outcome": BudgetExhausted.outcome, "started": clock.fmt(rnd.now()),
                                           "reason": message, "spec_sha256": rnd.opened.digest})
        rnd.reject(BudgetExhausted, message, {"privacy": record})

    def trainer(self, device: str) -> tuple[DPRun | None, int | None]:
        self.run = DPRun(self.plan_.config, DPRandom(device))
        return self.run, self.plan_.allowed_steps

    def training_record(self, result: TrainResult, record: dict[str, Any]) -> dict[str, Any]:
        # Losses, token counts and timings come from the private records outside the mechanism.
        return {**{k: v for k, v in record.items() if k not in result.PRIVATE}, "withheld_under_dp": list(result.PRIVATE)}

    def finish(self, rnd, result: TrainResult) -> dict[str, Any]:
        plan = self.plan_
        record = plan.summary(result.steps, self.run.random.source)
        self.ledger.settle(self.round_id, {"epsilon": record["epsilon"], "route_epsilon": record["route_epsilon"],
                                           "noise_multiplier": plan.config.noise_multiplier,
                                           "randomness": self.run.random.source}, steps=result.steps)
        rnd.record("tgflow.privacy", record)
        if result.steps < plan.planned_steps:
            rnd.checkpoints.clear()
            rnd.reject(BudgetExhausted, f"privacy budget reached: stopped after {result.steps} of {plan.planned_steps} "
                       f"steps (route epsilon {record['route_epsilon']:.4g} of {plan.budget:g}); nothing packaged",
                       {"training": result.metrics(private=True), "privacy": record})
        return record

    def settle(self, rnd, outcome: str) -> None:
        if self.charged:
            self.ledger.settle(self.round_id, {"outcome": outcome, "settled": clock.fmt(rnd.now())})

    def manifest(self, record: dict[str, Any]) -> dict[str, Any]:
        return self.plan_.manifest(record)


def check(spec) -> None:
    """Refuse a spec the mode cannot run, before the route's lock is taken (no trace left)."""
    if spec.privacy.mode == "n2he":
        check_n2he(spec)
    if spec.privacy.trains_with_dp:
        privacy.check_spec(spec)


def check_n2he(spec) -> None:
    """n2he is secure aggregation of federated updates, and only sums are computed under
    encryption, so the update must be linear in what is summed: ffa's B (docs/n2he.md)."""
    fed = spec.federation
    if fed is None:
        raise InputError("privacy.mode \"n2he\" encrypts a federated site's update: the spec has no federation "
                         "section", hint="add federation (docs/federated.md), or use privacy.mode \"dp\" or \"off\"")
    if fed.method != "ffa":
        raise InputError("privacy.mode \"n2he\" needs federation.method \"ffa\": under encryption only sums are "
                         "computed, and exact merging multiplies B by A", hint="set federation.method to \"ffa\"")
    if fed.compression.topk is not None:
        raise InputError("federation.compression.topk is not available with privacy.mode \"n2he\": ciphertexts "
                         "are dense", hint="remove compression.topk")


def for_spec(spec, store) -> PrivacyMode:
    """The spec's training mode (``check`` has passed), opened on the route's store; n2he
    trains as dp when it has a dp section, else as off, and encrypts at the end."""
    return DP(spec, store) if spec.privacy.trains_with_dp else Off()
