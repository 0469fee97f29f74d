"""The key holder's round: decrypt an n2he sum, but only one that provably covers a quorum
of valid, signed, distinct site updates, then release it through the route's evaluation
and release stages.

Custody ``key-holder``: the key holder re-screens the signed updates the sum lists, re-sums
them itself and requires the aggregator's sum to be the same bytes; it decrypts its own sum.
A dishonest aggregator cannot get one site's update decrypted. Custody ``shared-key``
(NVFlare's model): the decrypting site cannot read the other sites' updates, so it trusts
the aggregator's signed list (docs/n2he.md says what that costs).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

import tgsp
from tgsp import clock
from tgsp.atomic import prepare_parent
from tgsp.errors import InputError, QuorumNotMet, SumRefused
from tgsp.unpack import PayloadReader

from ..fed import start as start_mod, updates
from ..n2he import ckks, context, layout, sum as he_sum
from ..stages import aggregation, inputs as inputs_stage
from ..stages.context import RoundResult
from ..telemetry.observe import stage


@dataclass(frozen=True)
class DecryptRequest:
    sum: Path
    aggregator: str  # the aggregator's signing key: the sum must be signed by it
    base: aggregation.Request  # the updates (key-holder custody), quorum, sites, weights, output flags
    identity: str | None = None  # the HE key (default: privacy.n2he.context)
    key: str | None = None  # the recipient key that opens the sum and the updates (default: privacy.n2he.key_holder)


@dataclass
class Job:
    rnd: Any
    i: Any
    dreq: DecryptRequest
    pub: context.Public
    names: list[str]
    start: dict[str, Any]
    idents: list
    n: int = 0


def _verified_sum(job: Job, want: dict[str, Any]):
    rnd, dreq = job.rnd, job.dreq
    policy = rnd.keyring.trust_policy(trusted=[dreq.aggregator], route=rnd.spec.route_key, kind=layout.SUM_KIND)
    report = tgsp.verify(dreq.sum, policy)
    if not report.ok:
        bad = report.first_failure
        raise SumRefused(f"the sum {dreq.sum} failed verification: {bad.name}: {bad.detail}",
                         hint="decrypt only a sum signed by the aggregator (--aggregator); nothing was decrypted")
    fed = report.manifest.get("federation")
    why = updates._mismatch(fed, {**want, "format": layout.SUM_FORMAT})
    if why is None:
        he, summed = fed.get("he"), fed.get("summed")
        why = (layout.ciphertexts_mismatch(he, job.pub.id, job.pub.params, job.n) if isinstance(he, dict)
               else "it has no he section")
        if why is None and not (isinstance(summed, list) and all(isinstance(c, dict) for c in summed)):
            why = "it lists no summed updates"
        why = why or _contradiction(he, summed)
    if why:
        raise SumRefused(f"the sum {dreq.sum} does not fit this round: {why}", hint="nothing was decrypted")
    return report, fed


def _contradiction(he: dict[str, Any], summed: list[dict[str, Any]]) -> str | None:
    """A signed sum that contradicts itself is refused, whatever custody (under shared-key
    custody the list is all a site has): each update and each site once, and the total
    weight the sum of the listed ones."""
    ids, sites = [c.get("update") for c in summed], [c.get("site_key") for c in summed]
    if len(set(map(str, ids))) != len(ids) or len(set(map(str, sites))) != len(sites):
        return "its summed list names an update or a site twice"
    weights = [c.get("weight") for c in summed]
    if not all(isinstance(w, int) and not isinstance(w, bool) and w >= 1 for w in weights) \
            or he.get("total_weight") != sum(weights):
        return f"its total weight {he.get('total_weight')!r} is not the sum of the listed weights"
    return None


def _enough(rnd, accepted: list[updates.Screened], quorum: int) -> None:
    """Refuse a sum of fewer than the quorum (and always of fewer than 2: that is one update)."""
    need, distinct = max(quorum, 2), len({s.site for s in accepted})
    if distinct < need or distinct != len(accepted):
        raise QuorumNotMet(f"refusing to decrypt: the sum covers {len(accepted)} updates from {distinct} distinct "
                           f"sites, and decrypting needs at least {need} (--quorum; a sum of one is that update)",
                           {"outcome": QuorumNotMet.outcome, "round": rnd.spec.federation.round, "quorum": quorum,
                            "summed": [s.package_id for s in accepted]})


def _key_holder_set(job: Job, fed, want, used: dict[str, str]) -> updates.Screening:
    """Re-screen the updates as the aggregator did; every one the sum lists must pass."""
    rnd, base = job.rnd, job.dreq.base
    policy = rnd.keyring.trust_policy(trusted=base.sites or rnd.spec.federation.sites, route=rnd.spec.route_key,
                                      kind=updates.KIND)
    screened = updates.screen(base.updates, policy, want, used, base.weights, {k.keyid for k in job.idents},
                              he_sum.HECheck(job.pub, job.n))
    have = {s.package_id: s for s in screened.accepted}
    listed = sorted({str(c.get("update")) for c in fed["summed"]})
    for pid in listed:
        if pid not in have:
            why = next((r["reason"] for r in screened.refused if r["update"] == pid), "it was not given")
            raise SumRefused(f"the sum lists update {pid[:23]}, which the key holder cannot use: {why}",
                             hint="give every update the sum lists (--updates-dir); nothing was decrypted")
    screened.accepted = [have[pid] for pid in listed]
    return screened


def _shared_key_set(job: Job, fed, used: dict[str, str]) -> updates.Screening:
    """Shared-key custody: the aggregator's signed list, checked against the site allowlist."""
    rnd = job.rnd
    trusted = rnd.keyring.trust_policy(trusted=job.dreq.base.sites or rnd.spec.federation.sites).trusted
    roots = {(t.lineage.walk()[0].key.keyid if t.lineage else t.keyid): t.name for t in trusted}
    out = updates.Screening()
    per = fed["he"].get("norm_bound", 0) / max(fed["he"].get("total_weight", 1), 1)
    for c in fed["summed"]:
        pid, site, w = c.get("update"), c.get("site_key"), c.get("weight")
        if site not in roots or pid in used or not isinstance(w, int) or isinstance(w, bool) or w < 1:
            raise SumRefused(f"the sum lists update {str(pid)[:23]} from a site not trusted here, one already "
                             "released, or one without a weight", hint="nothing was decrypted")
        man = {"federation": {"examples": c.get("examples"), "he": {"weight": w, "max_update_norm": per}},
               "privacy": c.get("privacy")}
        out.accepted.append(updates.Screened(job.dreq.sum, str(pid), site, roots[site], float(w), man, None))
    return out


def _decrypted(job: Job, report, accepted: list[updates.Screened], passphrase) -> np.ndarray:
    """The sum's values: key-holder custody decrypts its own re-sum, after checking the
    aggregator's sum is the same ciphertexts; shared-key decrypts the aggregator's."""
    n2he = job.rnd.spec.privacy.n2he
    secret, params = context.secret(job.rnd.keyring, job.dreq.identity or n2he.context, job.pub.id, passphrase)
    with PayloadReader(job.dreq.sum, report, job.idents) as theirs:
        n_ct = ckks.chunks_for(job.n, params)
        he_sum.index_ok(theirs, job.names, n_ct)
        if n2he.custody == "shared-key":
            chunks = (theirs.read(layout.ct_file(k), max_bytes=he_sum.MAX_CT) for k in range(n_ct))
        else:
            chunks = _same(theirs, he_sum.summed(accepted, job.idents, job.pub, job.names))
        return ckks.decrypt(secret, chunks, job.n, params)


def _same(theirs: PayloadReader, own):
    for k, ct in enumerate(own):
        if theirs.read(layout.ct_file(k), max_bytes=he_sum.MAX_CT) != ct:
            raise SumRefused(f"the aggregator's sum differs from the key holder's own sum of the same signed "
                             f"updates (ciphertext {k}): nothing was decrypted",
                             hint="the aggregator is broken or dishonest; re-run its aggregation")
        yield ct


def _adapter(job: Job, vec: np.ndarray, accepted: list[updates.Screened]) -> tuple[dict, dict]:
    """Round what is released, check the norm clipping allows, average, and add to the start."""
    params = job.pub.params
    vec = ckks.round_released(vec, params)
    bound = layout.norm_bound([s.federation for s in accepted])
    norm = float(np.linalg.norm(vec))
    if norm > bound * (1 + 1e-6) + params.release_step * np.sqrt(len(vec)):
        raise SumRefused(f"the decrypted sum has norm {norm:.6g}, over the {bound:.6g} that clipped updates "
                         "can sum to: a site did not clip its update (poisoning?); nothing was released")
    total = sum(s.federation["he"]["weight"] for s in accepted)
    state = dict(job.start)
    for key, delta in layout.split(vec / total, job.start, job.names).items():
        state[key] = job.start[key] + delta
    return state, {"norm": round(norm, 9), "norm_bound": round(bound, 9), "total_weight": total,
                   "release_step": params.release_step}


def _reader_key(spec, dreq: DecryptRequest) -> str:
    if spec.privacy.mode != "n2he":
        raise InputError("fed decrypt reads n2he sums: the run spec's privacy.mode is not \"n2he\"")
    key = dreq.key or spec.privacy.n2he.key_holder
    if not key:
        raise InputError("shared-key custody: name the recipient key the sum is encrypted to", hint="pass --key NAME")
    return key


def decrypt(spec_path: str | Path, dreq: DecryptRequest, keyring: tgsp.Keyring, passphrase: Callable[[], str], *,
            now: clock.Clock = clock.utcnow, wait_busy: float = 0.0, input_root: Path | None = None,
            output_root: Path | None = None) -> RoundResult:
    with stage("prepare"):
        rnd, prepared, method, _, idents = aggregation.prepare(spec_path, dreq.base, keyring, passphrase, now,
                                                               input_root, output_root,
                                                               reader=lambda spec: _reader_key(spec, dreq), releases=True)
    n2he = rnd.spec.privacy.n2he
    with stage("inputs"):
        i = inputs_stage.gather(rnd, prepared)
        ident, start_state = aggregation.start_of(rnd, i)
    names = start_mod.modules(start_state)
    job = Job(rnd, i, dreq, context.public(keyring, dreq.identity or n2he.context), names, start_state, idents)
    job.n = layout.values_count(start_state, names)
    with stage("screen"):
        want = aggregation.want(rnd, i, method, ident, names)
        report, fed = _verified_sum(job, want)
        pick = (lambda used: _shared_key_set(job, fed, used)) if n2he.custody == "shared-key" else \
            (lambda used: _key_holder_set(job, fed, want, used))
        screened = pick(aggregation.used_updates(rnd.store.view()))
        _enough(rnd, screened.accepted, dreq.base.quorum)
    t0 = time.perf_counter()
    with stage("decrypt"), rnd.stage("decrypting the sum"):  # before the lock and the output folder: a refusal writes nothing
        he_sum.check_range(screened.accepted, job.pub.params)
        state, numbers = _adapter(job, _decrypted(job, report, screened.accepted, passphrase), screened.accepted)
    numbers["seconds"] = round(time.perf_counter() - t0, 3)
    prepare_parent(rnd.opened.out_path)
    with rnd.store.session("fed decrypt", wait=wait_busy):
        # Again under the lock: a concurrent release may have used one of the updates meanwhile.
        now_used = pick(aggregation.used_updates(rnd.store)).accepted
        if {s.package_id for s in now_used} != {s.package_id for s in screened.accepted}:
            raise SumRefused("the sum's updates changed while waiting for the route's lock", hint="re-run")
        return _release(job, report, screened, state, numbers)


def _release(job: Job, report, screened: updates.Screening, state: dict, numbers: dict) -> RoundResult:
    rnd, n2he = job.rnd, job.rnd.spec.privacy.n2he
    summary = {"round": rnd.spec.federation.round, "method": "ffa", "weights": job.dreq.base.weights,
               "quorum": job.dreq.base.quorum, "rank": rnd.spec.lora.r, "custody": n2he.custody,
               "context": job.pub.id, "sum": report.package_id, **numbers}
    weights = [s.federation["he"]["weight"] / numbers["total_weight"] for s in screened.accepted]
    privacy = aggregation.privacy_record(screened.accepted, he={"custody": n2he.custody, "context": job.pub.id,
                                                        "sum": report.package_id})
    with stage("release"):
        return aggregation.evaluate_and_release(rnd, job.i, screened, state, summary, weights, privacy)
