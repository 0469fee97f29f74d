"""Homomorphic sums of n2he updates, ciphertext by ciphertext, without any secret key.

The aggregator sums the screened updates and writes the sum as a package of kind
``he-sum`` for the key holder; the key holder re-sums the same signed updates itself
before it decrypts anything (runners/recipes/decrypt.py). CKKS addition is exact integer
addition, so both sums are the same bytes. Memory: one ciphertext per update, and the sum.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Iterator

import tgsp
from tgsp import clock
from tgsp.errors import InputError
from tgsp.unpack import PayloadReader

from ..fed import updates
from . import ckks, layout

MAX_CT = 64 << 20  # one serialized ciphertext (N = 32768 is under 2 MiB)


class HECheck:
    """The screening's body check for n2he updates (updates.screen): the update's he section
    fits this context and start, and its pre-weight is the one --weights asks for."""

    def __init__(self, pub, n: int) -> None:
        self.pub, self.n = pub, n

    def readable(self, fed: dict[str, Any]) -> str | None:
        return layout.he_mismatch(fed, self.pub.id, self.pub.params, self.n)

    def weight(self, fed: dict[str, Any], weights: str) -> float | str:
        return layout.he_weight(fed, weights)


def check_range(accepted: list[updates.Screened], params: ckks.Params) -> float:
    """The bound on the sum's norm; refused where CKKS could not decode such a sum."""
    top = layout.norm_bound([s.federation for s in accepted])
    problem = layout.range_problem(top, params)
    if problem:
        raise InputError(problem)
    return top


def index_ok(reader: PayloadReader, names: list[str], n_ct: int) -> None:
    updates.index_ok(reader, names, {layout.ct_file(k) for k in range(n_ct)}, f"{n_ct} ciphertexts")


def summed(accepted: list[updates.Screened], identities: list, pub, names: list[str]) -> Iterator[bytes]:
    """The sum of every accepted update's ciphertext k, for k = 0, 1, ... (streaming)."""
    n = accepted[0].federation["he"]["values"]  # the same in every accepted update (layout.he_mismatch)
    n_ct = ckks.chunks_for(n, pub.params)
    with contextlib.ExitStack() as stack:
        readers = [stack.enter_context(PayloadReader(s.path, s.report, identities)) for s in accepted]
        for r in readers:
            index_ok(r, names, n_ct)
        # Each update's file k is read (decrypted, both digests checked) on its own thread:
        # hashing and AES-GCM release the GIL. Still one ciphertext per update in memory.
        pool = stack.enter_context(ThreadPoolExecutor(min(len(readers), os.cpu_count() or 1)))
        for k in range(n_ct):
            blobs = list(pool.map(lambda r: updates.read_or_refuse(r, layout.ct_file(k), MAX_CT), readers))
            yield _add_one(readers, blobs, k, pub, min(pub.params.slots, n - k * pub.params.slots))


def _add_one(readers: list[PayloadReader], blobs: list[bytes], k: int, pub, size: int) -> bytes:
    import tenseal as ts

    total = None
    for r, data in zip(readers, blobs):
        try:
            ct = ts.ckks_vector_from(pub.ctx, data)
            if ct.size() != size:
                raise ValueError(f"it holds {ct.size()} values, not {size}")
            total = ct if total is None else total + ct
        except (ValueError, RuntimeError, TypeError) as exc:
            raise updates.BadUpdate(r.report.package_id, f"ciphertext {k} does not deserialize under the "
                                                         f"context: {str(exc)[:120]}") from None
    return total.serialize()


def contributions(accepted: list[updates.Screened]) -> list[dict[str, Any]]:
    return [{"update": s.package_id, "site": s.site_name, "site_key": s.site, "weight": s.federation["he"]["weight"],
             "examples": s.federation.get("examples"), "privacy": s.manifest.get("privacy")} for s in accepted]


def write_sum(rnd, want: dict[str, Any], accepted: list[updates.Screened], identities: list, pub, names: list[str],
              quorum: int, bound: float) -> tuple[str, dict[str, Any]]:
    """The aggregator's he-sum package (signed by it, encrypted to output.recipients: the key
    holder, or the sites under shared-key custody). Returns (package id, its federation section)."""
    spec = rnd.spec
    with tempfile.TemporaryDirectory(prefix="tgflow-he-sum-") as tmp:
        folder = Path(tmp) / "sum"
        (folder / "he").mkdir(parents=True)
        (folder / updates.INDEX).write_text(json.dumps({"format": updates.INDEX_FORMAT, "modules": names}))
        for k, ct in enumerate(summed(accepted, identities, pub, names)):  # first: an update may yet be refused
            (folder / layout.ct_file(k)).write_bytes(ct)
        fed = {**want, "format": layout.SUM_FORMAT, "quorum": quorum, "summed": contributions(accepted),
               "he": {**{k: accepted[0].federation["he"][k] for k in ("layout", "context", "params", "values",
                                                                      "ciphertexts")},
                      "total_weight": sum(s.federation["he"]["weight"] for s in accepted), "norm_bound": bound}}
        rnd.record("tgflow.federation.he-sum", {k: v for k, v in fed.items() if k != "summed"} |
                   {"summed": [{k: c[k] for k in ("update", "site", "site_key", "weight")} for c in fed["summed"]]})
        rnd.record("tgflow.round.end", {"outcome": "summed", "started": clock.fmt(rnd.started),
                                        "finished": clock.fmt(rnd.now())})
        built = tgsp.build(folder, rnd.opened.out_path, route=spec.route_key, kind=layout.SUM_KIND,
                           recipients=[rnd.keyring.resolve_public(r).key for r in spec.output.recipients],
                           signers=[rnd.signer], events=rnd.events, now=rnd.now,
                           external={"run_spec_sha256": rnd.opened.digest, "route_key": spec.route_key},
                           extra={"federation": fed, "privacy": {"mode": "n2he", "sum_of": len(accepted)}})
    return built.package_id, fed
