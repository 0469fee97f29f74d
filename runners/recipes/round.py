"""One continuous-learning round: inputs -> selection -> plan -> update -> evaluation -> release.

The shell around the stages (runners/stages/). The whole round runs inside
the route store's session, under the route's lock: a second round on a busy
route exits "busy" and changes nothing. Every decision is an evidence event;
a round that ends without a package (skipped, rejected, refused) still
writes its evidence and a report into the route's state folder and a line
in the route log. The route moves on (seen data, version) only when a
package was written; it is then registered as the route's candidate.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any, Callable

import tgsp
from tgsp import clock
from tgsp.atomic import prepare_parent
from tgsp.errors import InputError, Interrupted

from ..distributed import ranks, world as dist_world
from ..learn import model as model_mod
from ..privacy import modes, plan as privacy
from ..privacy.ledger import Ledger
from ..stages import (evaluate as evaluate_stage, inputs as inputs_stage, release as release_stage,
                      select as select_stage, site as site_stage, update as update_stage)
from ..stages.context import FOLLOWER, PACKAGED, UPDATE, Progress, Round, RoundResult, registry_for
from ..stages.inputs import open_round
from ..state import keys as state_keys
from ..state.store import ROUND, RouteStore
from ..telemetry.observe import stage


def run_round(spec_path: str | Path, keyring: tgsp.Keyring, passphrase: Callable[[], str], *,
              stop: threading.Event | None = None, progress: Progress | None = None,
              now: clock.Clock = clock.utcnow, input_root: Path | None = None,
              output_root: Path | None = None, wait_busy: float = 0.0, require_plan: str | None = None,
              notes: Callable[[str, bool], None] | None = None) -> RoundResult:
    """Run one round (``wait_busy``: seconds to wait for a busy route's lock before RouteBusy;
    ``require_plan``: the least DP plan verdict to train on; ``notes``: lines for the operator). Relative input paths resolve against ``input_root``
    (default: the spec's folder); with ``output_root`` the package goes to
    ``output_root/<basename of output.path>`` and relative state_dirs there."""
    with stage("prepare"):
        opened = open_round(spec_path, input_root, output_root, now)
        state = opened.state  # refuses a state_dir that climbs out of the output root
        inputs_stage.check_round(opened.spec, keyring)
        inputs_stage.check_recipients(opened.spec, keyring)
        prepare_parent(opened.out_path)  # one rule for every command: create it, or exit 5
        # Fail fast, and leave no trace, on everything the lock does not protect: keys, model, feeds.
        signer = keyring.signer(opened.spec.output.signing_key, passphrase)
        prepared = inputs_stage.prepare(opened, keyring)
    world = _world(opened.spec)
    if world is not None and not world.main:  # under torchrun: rank 0 leads, this rank trains its share
        try:
            return RoundResult(FOLLOWER, {"code": ranks.follow(world, opened, prepared, stop)}, None, None)
        finally:
            world.close()
    led: list = []
    failure: BaseException | None = None
    try:  # from here on, every way out tells the other ranks (if any) how the round ended
        spec = opened.spec
        store = RouteStore(state, spec.route_key, now=now,
                           keys=state_keys.for_round(spec.route_key, spec.output.recipients, keyring, passphrase, signer))
        with store.session("peft run", wait=wait_busy):
            mode = modes.for_spec(opened.spec, store)  # fails closed on an unreadable ledger, before any work
            rnd = Round(opened, store, registry_for(opened, keyring, now), keyring, passphrase, signer, mode, now, stop,
                        progress, started=now(), world=world, led=led, require_plan=require_plan, notes=notes)
            try:
                return _stages(rnd, prepared)
            except Interrupted:
                store.append(ROUND, {"outcome": "interrupted", "spec_sha256": opened.digest,
                                     "note": "checkpoint saved; re-run to resume"})
                raise
    except BaseException as exc:
        failure = exc
        raise
    finally:
        _finish_world(world, failure, led)


def _world(spec):
    """torchrun's process group when WORLD_SIZE > 1 (runners/distributed/world.py), checked against the spec."""
    if dist_world.world_size() <= 1:
        return None
    world = dist_world.open_world(model_mod.pick_device(spec.training.precision).name)
    try:
        dist_world.check_batch(world, spec.training.batch_size)
    except BaseException:
        world.close()
        raise
    return world


def _finish_world(world, exc, led: list) -> None:
    if world is None:
        return
    try:
        ranks.finish(world, ranks.code_of(exc), trained=bool(led))
    finally:
        world.close()


def _stages(rnd: Round, prepared: inputs_stage.Prepared) -> RoundResult:
    """The stages, each timed for telemetry (runners/telemetry/observe.py) under its metric name."""
    with stage("inputs"):
        i = inputs_stage.gather(rnd, prepared)
    with stage("select"):
        sel = select_stage.select(rnd, i)
    with stage("plan"):
        begun = update_stage.begin(rnd.spec, i)
        rnd.mode.plan(rnd, len(sel.train_data), update_stage.fingerprint(rnd, i, sel),
                      update_stage.probe(rnd.spec, i, sel.eval, begun) if sel.eval else None)
    with stage("train"):
        u = update_stage.update(rnd, i, sel, begun)
    ending = _site_update if rnd.spec.federation is not None else _release
    return ending(rnd, i, sel, u)


def _release(rnd: Round, i, sel, u) -> RoundResult:
    with stage("evaluate"):
        ev = evaluate_stage.evaluate(rnd, i, sel, u)
    with stage("release"):
        released, report = release_stage.release(rnd, i, sel, u, ev)
    return RoundResult(PACKAGED, report, released.path, released.package_id)


def _site_update(rnd: Round, i, sel, u) -> RoundResult:
    """A federated site: the round ends at an update for the aggregator (runners/stages/site.py)."""
    with stage("site-update"):
        pid, report = site_stage.emit(rnd, i, sel, u)
    return RoundResult(UPDATE, report, rnd.opened.out_path, pid)


def privacy_budget(spec_path: str | Path, keyring: tgsp.Keyring, *, input_root: Path | None = None,
                   output_root: Path | None = None) -> dict[str, Any]:
    """The route's spent and remaining ε, and how the spec's next round would fit.

    Reuses the inputs stage's opening of the spec and feed; reads the ledger; trains nothing."""
    opened = open_round(spec_path, input_root, output_root)
    spec = opened.spec
    if not spec.privacy.trains_with_dp:
        raise InputError(f"privacy.mode is {spec.privacy.mode!r} without dp: route {spec.route_key} keeps no privacy ledger",
                         hint="the budget applies to privacy.mode \"dp\" routes")
    privacy.check_spec(spec)
    dp = spec.privacy.dp
    ledger = Ledger.load(opened.state, spec.route_key)
    tok = model_mod.load_tokenizer(model_mod.resolve_model(spec.base_model_ref, opened.base))
    feed, eval_feed = inputs_stage.read_feeds(opened, keyring, tok, ("feed", "eval"))
    n = len(select_stage.dp_training_set(feed.examples, eval_feed.examples))  # what the round would train on
    plan = privacy.plan(spec, n, ledger.events())
    spent = ledger.spent(dp.target_delta, dp.accountant)
    return _budget_report(spec, ledger, plan, spent, n)


def _budget_report(spec, ledger: Ledger, plan: privacy.DPPlan, spent: float, n: int) -> dict[str, Any]:
    dp = spec.privacy.dp
    after = plan.summary(plan.allowed_steps, "n/a")
    statuses: dict[str, int] = {}
    for e in ledger.entries:
        key = e["status"] if e["status"] != "settled" else e.get("outcome", "settled")
        statuses[key] = statuses.get(key, 0) + 1
    return {
        "route": spec.route_key, "ledger": str(ledger.path), "accountant": dp.accountant, "delta": dp.target_delta,
        "rounds": statuses, "route_epsilon": round(spent, 6),
        "route_epsilon_rdp": round(ledger.spent(dp.target_delta, "rdp"), 6),
        "route_budget_epsilon": dp.route_budget_epsilon,
        "remaining_epsilon": None if dp.route_budget_epsilon is None else round(max(0.0, dp.route_budget_epsilon - spent), 6),
        "next_round": {"examples": n, "sample_rate": plan.config.sample_rate,
                       "noise_multiplier": plan.config.noise_multiplier, "planned_steps": plan.planned_steps,
                       "steps_within_budget": plan.allowed_steps, "epsilon": after["epsilon"],
                       "route_epsilon_after": after["route_epsilon"],
                       "outcome": ("runs in full" if plan.allowed_steps == plan.planned_steps else
                                   "refused (exit 13)" if plan.allowed_steps == 0 else
                                   f"stops at step {plan.allowed_steps} (exit 13)")}}
