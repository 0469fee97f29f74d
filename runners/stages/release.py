"""Stage 6, release: the signed, encrypted package; its registration as the
route's ``candidate``; and the route store's commit (seen data, retained
data, the round's log line)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import tgsp
from tgsp import clock
from tgsp.builder import in_memory
from tgsp.errors import OutputError, TgflowError

from ..data.neardup import near_key
from ..learn import adapters
from ..learn.card import model_card
from .context import PACKAGED
from .evaluate import Evaluation
from .inputs import Inputs
from .select import Selection
from .update import Update


@dataclass
class Released:
    path: Path
    package_id: str
    version: int
    registered: str | None  # a path, or an oci:// reference


def _digest_map(d: str) -> dict[str, str]:
    algo, _, value = d.rpartition(":")
    return {algo or "sha256": value}


def dependencies(rnd, i: Inputs) -> list[dict[str, Any]]:
    deps = [{"uri": f"tgflow:base-model/{rnd.spec.base_model_ref}", "digest": {"sha256": i.model_id}}]
    if i.feed is not None:  # a federated aggregator has none
        deps.append({"uri": f"tgflow:feed/{i.feed.source}", "digest": _digest_map(rnd.mode.private(i.feed.digest))})
    deps.append({"uri": f"tgflow:reference/{i.reference.source}", "digest": {"sha256": i.reference.digest}})
    if i.parent is not None:
        deps.append({"uri": f"tgflow:parent/{i.parent.route}@{i.parent.version}",
                     "digest": _digest_map(i.parent.package_id)})
    return deps


def package(rnd, i: Inputs, u: Update, version: int, extra_deps: list[dict[str, Any]] = ()) -> str:
    spec, now = rnd.spec, rnd.now
    recipients = [rnd.keyring.resolve_public(r).key for r in spec.output.recipients]
    rnd.record("tgflow.round.end", {"outcome": PACKAGED, "version": version, "started": clock.fmt(rnd.started),
                                    "finished": clock.fmt(now())})
    card = model_card(spec.route_key, version, {e["type"]: e["data"] for e in rnd.events})
    files = in_memory(adapters.in_memory(u.model, base_ref=spec.base_model_ref, card=card))  # never on disk
    expires = now() + timedelta(days=spec.output.expires_in_days) if spec.output.expires_in_days else None
    built = tgsp.build(rnd.opened.out_path.parent, rnd.opened.out_path, files=files, route=spec.route_key,
                       version=version, kind="adapter", recipients=recipients, signers=[rnd.signer],
                       events=rnd.events, expires=expires, now=now,
                       external={"run_spec_sha256": rnd.opened.digest, "route_key": spec.route_key},
                       extra={"privacy": rnd.mode.manifest(u.privacy)},
                       dependencies=dependencies(rnd, i) + list(extra_deps))
    return built.package_id


def release(rnd, i: Inputs, sel: Selection, u: Update, ev: Evaluation) -> tuple[Released, dict[str, Any]]:
    spec = rnd.spec
    version = rnd.store.next_version() if spec.output.version == "auto" else spec.output.version
    pid = package(rnd, i, u, version)
    registered = rnd.registry.where(spec.route_key, pid)
    # Only now does the route move on. Every novel example this round consumed is "seen".
    if rnd.mode.uses_history:  # DP records must not steer which records later rounds select
        rnd.store.add_seen({e.digest for e in sel.novel}, {near_key(e) for e in sel.novel})
        rnd.store.retain(version, sel.train, sel.eval)
    rnd.checkpoints.clear()
    rnd.mode.settle(rnd, PACKAGED)
    report = {"novelty": sel.summary, "training": u.result.metrics(private=not rnd.mode.uses_history), **ev.report,
              "privacy": u.privacy, "outcome": PACKAGED, "package": str(rnd.opened.out_path), "package_id": pid,
              "version": version, "registered": {"path": str(registered), "alias": "candidate"},
              "parent": i.parent and {"package_id": i.parent.package_id, "version": i.parent.version}}
    rnd.commit(PACKAGED, report, {"version": version, "package_id": pid,
                                  "parent": i.parent.package_id if i.parent else None})
    register(rnd, pid)
    return Released(rnd.opened.out_path, pid, version, registered), report


def register(rnd, pid: str, command: str = "peft run") -> None:
    """Registered as candidate after the round is committed, so a registry that is busy or
    unwritable loses nothing: the package and its log line stay, and a retry is one command."""
    try:
        rnd.registry.register(rnd.opened.out_path, rnd.signer, alias="candidate", command=command)
    except TgflowError as exc:
        raise OutputError(f"the round is packaged ({pid[:23]}) but not registered: {exc}",
                        hint=f"register it: tgflow route register {rnd.opened.out_path} --registry "
                             f"{rnd.registry.root} --signing-key {rnd.spec.output.signing_key}") from None
