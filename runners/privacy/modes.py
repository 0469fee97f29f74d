"""Privacy modes: how a round plans its mechanism and what its update may reveal.

A mode plugs in at two stages: *plan* (before training: check the spec,
charge a ledger, fix the mechanism's parameters) and *update* (what the
trainer runs with, what the evidence may say about training, how the round
is settled, and what a federated site's update carries). A mode is one class:
``Off`` and ``DP`` train; ``N2HE`` wraps either and encrypts the site's update;
``Federated`` is the aggregator's, which trains nothing.
"""

from __future__ import annotations

from typing import Any, Callable, Optional, Protocol

from tgsp import clock
from tgsp.canonical import encode, sha256_hex
from tgsp.errors import BudgetExhausted, InputError, PlanRefused

from ..fed.updates import Body
from ..learn.dp_sgd import DPRandom
from ..learn.probe import GradientScale
from ..learn.train import DPRun, TrainResult
from ..n2he import site as he_site
from . import outlook, plan as privacy
from .ledger import Ledger
from .rules import check_n2he

PlainBody = Callable[[], Body]  # the site's plaintext update body (runners/stages/site.py)
Probe = Optional[Callable[[float], GradientScale]]  # clip -> gradient scale on public data (runners/learn/probe.py)


class PrivacyMode(Protocol):
    name: str
    uses_history: bool  # may the route's history (seen data, retained data, per-example losses) steer selection?
    private_counts: bool  # is the true example count private (a federated site then sends only a declared one)?

    @staticmethod
    def check(spec) -> None: ...  # before the route's lock: refuse a spec this mode cannot run

    @staticmethod
    def check_site(spec, keyring, now: clock.Clock) -> None: ...  # before the lock, at a federated site

    def private(self, sha256_hex: str) -> str: ...

    def plan(self, rnd, n_train: int, fingerprint: dict, probe: Probe = None) -> None: ...

    def trainer(self, device: str) -> tuple[DPRun | None, int | None]: ...

    def training_record(self, result: TrainResult, record: dict[str, Any]) -> dict[str, Any]: ...

    def finish(self, rnd, result: TrainResult) -> dict[str, Any]: ...

    def settle(self, rnd, outcome: str) -> None: ...

    def manifest(self, record: dict[str, Any]) -> dict[str, Any]: ...

    def update_body(self, rnd, sel, u, final: dict, names: list[str], examples: int | None,
                    plain: PlainBody) -> Body: ...


class Off:
    name, uses_history, private_counts = "off", True, False

    @staticmethod
    def check(spec) -> None:
        return None

    @staticmethod
    def check_site(spec, keyring, now: clock.Clock) -> None:
        return None

    def private(self, sha256_hex: str) -> str:
        return sha256_hex

    def plan(self, rnd, n_train: int, fingerprint: dict, probe: Probe = None) -> None:
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

    def update_body(self, rnd, sel, u, final: dict, names: list[str], examples: int | None,
                    plain: PlainBody) -> Body:
        return plain()


_SPENT = ("tgflow peft budget shows what is left; fewer training.steps or a higher noise_multiplier fit in it. A "
          "larger route budget is a policy decision, not a fix")


class DP:
    """DP-SGD with the route's write-ahead privacy ledger (docs/privacy.md)."""

    name, uses_history, private_counts = "dp", False, True

    @staticmethod
    def check(spec) -> None:
        privacy.check_spec(spec)

    @staticmethod
    def check_site(spec, keyring, now: clock.Clock) -> None:
        if spec.federation.compression.topk is not None:
            raise InputError("federation.compression.topk is not available with privacy.mode \"dp\": its gate reads "
                             "the site's held-out data, which DP does not cover", hint="remove compression.topk")

    def __init__(self, spec, store) -> None:
        self.spec, self.ledger = spec, Ledger.load(store.folder, spec.route_key)  # fail closed before any work
        self.audit = privacy.AuditKey(store.audit_key())
        self.plan_: privacy.DPPlan | None = None
        self.round_id, self.charged, self.run = "", False, None

    def private(self, sha256_hex: str) -> str:
        return self.audit.digest(sha256_hex)

    def plan(self, rnd, n_train: int, fingerprint: dict, probe: Probe = None) -> None:
        self.round_id = sha256_hex(encode(fingerprint))
        own = self.ledger.pending(self.round_id)  # a resumed round's own charge is not "spent before"
        spent = [ev for e in self.ledger.entries if e is not own for ev in self.ledger.events_of(e)]
        plan = self.plan_ = privacy.plan(self.spec, n_train, spent)
        if plan.allowed_steps == 0:
            self._refuse(rnd, plan)
        if probe is not None:
            with rnd.stage("planning"):
                # The free changes only: the accountant's alternatives take seconds each (privacy plan weighs them).
                plan = self.plan_ = plan.judged(self.spec, probe(plan.config.max_grad_norm), thorough=False)
            self._verdict(rnd, plan)
        self.ledger.begin(self.round_id, plan.event(plan.allowed_steps), {
            "started": clock.fmt(rnd.started), "planned_steps": plan.planned_steps, "delta": plan.delta,
            "accountant": plan.accountant, "max_grad_norm": plan.config.max_grad_norm,
            "expected_batch_size": plan.config.expected_batch, "sample_rate": plan.config.sample_rate,
            "processes": rnd.world.size if rnd.world is not None else 1, "spec_sha256": rnd.opened.digest})
        self.charged = True

    def _verdict(self, rnd, plan: privacy.DPPlan) -> None:
        """Say the plan's verdict before any ε is charged; refuse it under ``--require-plan``."""
        view = plan.outlook
        line = (f"plan: {view['verdict']} to learn (noise {view['noise_per_coordinate']:.3g} per coordinate against "
                f"a signal of {view['signal_per_coordinate']:.3g}; travel {view['travel']:.3g}, coherence "
                f"{view['coherence']:.3g}; likely from {outlook.LIKELY_TRAVEL:g} and {outlook.LIKELY_COHERENCE:g})")
        advice = (view.get("advice") or {}).get("change")
        wanted = rnd.require_plan
        if wanted and not outlook.at_least(view["verdict"], wanted):
            message = f"{line}; --require-plan {wanted} refuses it before any epsilon is charged"
            rnd.reject(PlanRefused, message, {"privacy": {**plan.summary(0, "none"), "refused": True}},
                       advice or "see tgflow privacy plan --spec SPEC")
        rnd.note(line + (f"; would help most: {advice}" if advice else ""),
                 warning=view["verdict"] == outlook.UNLIKELY)

    def _refuse(self, rnd, plan: privacy.DPPlan) -> None:
        record = {**plan.summary(0, "none"), "refused": True}
        rnd.record("tgflow.privacy", record)
        message = (f"privacy budget exhausted: the route has spent epsilon {record['route_epsilon_before']:.4g} of "
                   f"{plan.budget:g}, and not one more step at noise_multiplier {plan.config.noise_multiplier:.4g} fits")
        self.ledger.refuse(self.round_id, {"outcome": BudgetExhausted.outcome, "started": clock.fmt(rnd.now()),
                                           "reason": message, "spec_sha256": rnd.opened.digest})
        rnd.reject(BudgetExhausted, message, {"privacy": record}, _SPENT)

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
                       {"training": result.metrics(private=True), "privacy": record}, _SPENT)
        return record

    def settle(self, rnd, outcome: str) -> None:
        if self.charged:
            self.ledger.settle(self.round_id, {"outcome": outcome, "settled": clock.fmt(rnd.now())})

    def manifest(self, record: dict[str, Any]) -> dict[str, Any]:
        return self.plan_.manifest(record)

    def update_body(self, rnd, sel, u, final: dict, names: list[str], examples: int | None,
                    plain: PlainBody) -> Body:
        return plain()


class N2HE:
    """privacy.mode "n2he": the site trains under its training mode (dp with a dp section, else
    off), and its update is ΔB, clipped, weighted and CKKS-encrypted (runners/n2he/site.py)."""

    def __init__(self, training: PrivacyMode) -> None:
        self.training = training
        self.name, self.uses_history, self.private_counts = training.name, training.uses_history, training.private_counts

    @staticmethod
    def check(spec) -> None:
        check_n2he(spec)

    @staticmethod
    def check_site(spec, keyring, now: clock.Clock) -> None:
        he_site.check(spec, keyring, now)

    def private(self, sha256_hex: str) -> str:
        return self.training.private(sha256_hex)

    def plan(self, rnd, n_train: int, fingerprint: dict, probe: Probe = None) -> None:
        self.training.plan(rnd, n_train, fingerprint, probe)

    def trainer(self, device: str) -> tuple[DPRun | None, int | None]:
        return self.training.trainer(device)

    def training_record(self, result: TrainResult, record: dict[str, Any]) -> dict[str, Any]:
        return self.training.training_record(result, record)

    def finish(self, rnd, result: TrainResult) -> dict[str, Any]:
        return self.training.finish(rnd, result)

    def settle(self, rnd, outcome: str) -> None:
        self.training.settle(rnd, outcome)

    def manifest(self, record: dict[str, Any]) -> dict[str, Any]:
        return self.training.manifest(record)

    def update_body(self, rnd, sel, u, final: dict, names: list[str], examples: int | None,
                    plain: PlainBody) -> Body:
        return he_site.body(rnd, sel, u, final, names, examples)


class Federated:
    """The aggregator's privacy mode: it trains nothing; its record is the sites' records."""

    name, uses_history, private_counts = "federated", False, False

    def private(self, sha256_hex: str) -> str:
        return sha256_hex

    def settle(self, rnd, outcome: str) -> None:
        return None

    def manifest(self, record: dict[str, Any]) -> dict[str, Any]:
        return record


def kinds(spec) -> list[type]:
    """The mode classes a spec's round runs under: how it trains, then what wraps its update."""
    return [DP if spec.privacy.trains_with_dp else Off] + ([N2HE] if spec.privacy.mode == "n2he" else [])


def check(spec) -> None:
    """Refuse a spec the mode cannot run, before the route's lock is taken (no trace left)."""
    for kind in reversed(kinds(spec)):  # n2he's shape first, as before: it names the missing federation
        kind.check(spec)


def check_site(spec, keyring, now: clock.Clock = clock.utcnow) -> None:
    """A federated site's checks, before the route's lock (keys, contexts, settings that fit together)."""
    for kind in kinds(spec):
        kind.check_site(spec, keyring, now)


def for_spec(spec, store) -> PrivacyMode:
    """The spec's mode (``check`` has passed), opened on the route's store: its training mode
    (dp or off), wrapped by each mode that ``kinds`` lists after it (n2he encrypts at the end)."""
    train, *wrappers = kinds(spec)
    mode: PrivacyMode = DP(spec, store) if train is DP else Off()
    for wrap in wrappers:
        mode = wrap(mode)
    return mode
