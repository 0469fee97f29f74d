"""The aggregator's round: screen the updates, merge a quorum of them exactly (or, under
n2he, sum their ciphertexts for the key holder), and release the result through the
route's evaluation and release stages.

Order matters. Everything is checked before the route's lock is taken, so a
missed quorum writes nothing at all; under the lock the replay check runs
again against the route log (a concurrent aggregation may have used an
update meanwhile). The machinery is runners/stages/aggregation.py.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Callable

import tgsp
from tgsp import clock
from tgsp.atomic import prepare_parent

from ..fed import start as start_mod, updates
from ..n2he import context as he_context, layout as he_layout, sum as he_sum
from ..stages import aggregation, inputs as inputs_stage
from ..stages.aggregation import Request
from ..stages.context import SUMMED, RoundResult
from ..telemetry.observe import stage


def aggregate(spec_path: str | Path, req: Request, keyring: tgsp.Keyring, passphrase: Callable[[], str], *,
              now: clock.Clock = clock.utcnow, wait_busy: float = 0.0, input_root: Path | None = None,
              output_root: Path | None = None) -> RoundResult:
    with stage("prepare"):
        rnd, prepared, method, policy, idents = aggregation.prepare(spec_path, req, keyring, passphrase, now,
                                                                    input_root, output_root)
    with stage("inputs"):
        i = inputs_stage.gather(rnd, prepared)
        ident, start_state = aggregation.start_of(rnd, i)
    names = start_mod.modules(start_state)
    with stage("screen"):
        want = aggregation.want(rnd, i, method, ident, names)
        ids = {k.keyid for k in idents}
        he = _he(rnd, start_state, names)
        screened = updates.screen(req.updates, policy, want, aggregation.used_updates(rnd.store.view()), req.weights,
                                  ids, he or updates.PLAIN)
        aggregation.check_quorum(screened, req.quorum, rnd.spec.federation.round)
        if he:
            he_sum.check_range(screened.accepted, he.pub.params)  # before the lock: a sum CKKS could not decode
    prepare_parent(rnd.opened.out_path)  # only now: a missed quorum writes nothing, not even a folder
    with rnd.store.session("fed aggregate", wait=wait_busy):
        screened.drop_used(aggregation.used_updates(rnd.store))  # a concurrent aggregation may have used one meanwhile
        aggregation.check_quorum(screened, req.quorum, rnd.spec.federation.round)
        if he:
            return _sum(rnd, want, screened, idents, he, names, req.quorum)
        return _merge_and_release(rnd, i, screened, start_state, names, method, req, idents)


def _he(rnd, start_state: dict, names: list[str]):
    """n2he: the screening's check against the public context (the aggregator holds no secret)."""
    if rnd.spec.privacy.mode != "n2he":
        return None
    pub = he_context.public(rnd.keyring, rnd.spec.privacy.n2he.context)
    return he_sum.HECheck(pub, he_layout.values_count(start_state, names))


def _sum(rnd, want, screened: updates.Screening, idents, he, names, quorum: int) -> RoundResult:
    """n2he: write the homomorphic sum for the key holder; the route's release happens there."""
    t0 = time.perf_counter()
    with stage("sum"), rnd.stage("summing the encrypted updates"):  # an undecodable ciphertext refuses its update only
        pid, fed = updates.without_bad(
            screened, lambda: he_sum.write_sum(rnd, want, screened.accepted, idents, he.pub, names, quorum,
                                               he_sum.check_range(screened.accepted, he.pub.params)),
            lambda: aggregation.check_quorum(screened, quorum, rnd.spec.federation.round))
    report = {"outcome": SUMMED, "package": str(rnd.opened.out_path), "package_id": pid,
              "aggregation": {"round": fed["round"], "method": "ffa", "quorum": quorum, "context": he.pub.id,
                              "seconds": round(time.perf_counter() - t0, 3), "total_weight": fed["he"]["total_weight"],
                              "accepted": [s.summary(s.federation["he"]["weight"] / fed["he"]["total_weight"])
                                           for s in screened.accepted], "refused": screened.refused}}
    rnd.commit(SUMMED, report, {"package_id": pid, "round": fed["round"],
                                "updates": [s.package_id for s in screened.accepted]})
    return RoundResult(SUMMED, report, rnd.opened.out_path, pid)


def _merge_and_release(rnd, i, screened, start_state, names, method, req: Request, idents) -> RoundResult:
    spec = rnd.spec
    rank = req.rank or spec.lora.r
    t0 = time.perf_counter()
    with stage("merge"), rnd.stage("merging the updates"):  # an unusable payload is refused, the rest go on
        state, numbers = updates.without_bad(
            screened, lambda: aggregation.merge(screened.accepted, idents, start_state, names, method, rank),
            lambda: aggregation.check_quorum(screened, req.quorum, spec.federation.round))
    summary = {"round": spec.federation.round, "method": method, "weights": req.weights, "quorum": req.quorum,
               "rank": rank, **numbers, "seconds": round(time.perf_counter() - t0, 3)}
    with stage("release"):
        return aggregation.evaluate_and_release(rnd, i, screened, state, summary,
                                                aggregation.merge_weights(screened.accepted),
                                                aggregation.privacy_record(screened.accepted))


