"""The aggregator's machinery, shared by the aggregator's round (runners/recipes/aggregate.py)
and the key holder's (runners/recipes/decrypt.py): the spec and flags checked before the
lock, the start every update must name, the merge, and the release of the merged (or
decrypted) adapter through the route's evaluation and release stages.

The merge streams module by module: per module, one site's tensors are decrypted at a time.
"""

from __future__ import annotations

import contextlib
import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from tgsp.errors import InputError, KeyringError, QuorumNotMet
from tgsp.unpack import PayloadReader

from ..fed import compress, merge as merge_mod, start as start_mod, updates
from ..learn import train
from ..privacy import modes
from ..privacy.rules import check_n2he
from ..state import keys as state_keys
from ..state.store import RouteStore
from . import evaluate as evaluate_stage, inputs as inputs_stage, release as release_stage
from .context import PACKAGED, Round, RoundResult, registry_for
from .inputs import open_round
from .select import Selection
from .update import Update


@dataclass(frozen=True)
class Request:
    updates: list[Path]
    quorum: int
    route: str | None = None
    round: str | None = None
    method: str | None = None  # default: the spec's federation.method
    weights: str = "examples"
    rank: int | None = None  # default: the spec's lora.r
    sites: list[str] = field(default_factory=list)  # default: the spec's federation.sites
    sign: str | None = None
    recipients: list[str] = field(default_factory=list)
    out: str | None = None


@dataclass
class Aggregated:
    """What evaluate() reads as the update's training result."""

    summary: dict[str, Any]

    def metrics(self, *, private: bool = False) -> dict[str, Any]:
        return {"steps": 0, "aggregation": self.summary}


def _record_of(privacy: Any) -> dict[str, Any]:
    """A site's own privacy record, as it wrote it; never one that can name another site."""
    return privacy if isinstance(privacy, dict) and privacy else {"mode": "unknown"}


def privacy_record(accepted: list[updates.Screened], he: dict[str, Any] | None = None) -> dict[str, Any]:
    """The aggregate's privacy record; ``he``: it was decrypted from an n2he sum (custody, context)."""
    sites = [{**_record_of(s.manifest.get("privacy")), "site": s.site_name, "site_key": s.site} for s in accepted]
    dp = [s for s in sites if s.get("mode") == "dp" or (s.get("training") or {}).get("mode") == "dp"]
    seen = ("n2he: the aggregator saw only CKKS ciphertexts; the key holder decrypted only this sum of "
            f"{len(accepted)} updates" if he else "plaintext aggregation: the aggregator sees every site's update")
    return {"mode": "federated", "sites": sites, **({"he": he} if he else {}),
            "guarantee": ("per site, by parallel composition over disjoint site data: each dp site's records keep "
                          "that site's (epsilon, delta); merging, evaluating and releasing is post-processing")
            if dp else "none: no site ran differential privacy",
            "not_covered": ["sites without dp (listed with mode off): their updates may memorise records",
                            "a person whose records are at several sites: their epsilons add up across those sites",
                            "the weights: each update's example count is public (dp sites declare one or send none)",
                            "the aggregator's own eval and reference data", seen]}


def open_spec(spec_path, req: Request, input_root, output_root, now, releases: bool | None):
    """The spec, checked; ``releases``: this command evaluates and releases (needs an eval feed);
    default: unless the spec is n2he (its aggregator writes a sum for the key holder)."""
    opened = open_round(spec_path, input_root, output_root, now)
    spec, fed = opened.spec, opened.spec.federation
    if fed is None:
        raise InputError("the run spec has no federation section", hint="add federation.round and federation.aggregator")
    if spec.privacy.mode == "n2he":
        check_n2he(spec)
    if (releases if releases is not None else spec.privacy.mode != "n2he") and spec.eval is None:
        raise InputError("fed aggregate gates on the aggregator's eval feed: the run spec has no eval",
                         hint="set eval to a held-out feed that covers every site's task")
    for flag, have, expected in (("--route", req.route, spec.route_key), ("--round", req.round, fed.round)):
        if have is not None and have != expected:
            raise InputError(f"{flag} {have} differs from the run spec's {expected}",
                             hint="aggregate with the route's own spec")
    out = spec.output.model_copy(update={k: v for k, v in (("signing_key", req.sign), ("recipients", req.recipients or None),
                                                           ("path", req.out)) if v})
    return dataclasses.replace(opened, spec=spec.model_copy(update={"output": out}))


def start_of(rnd, i) -> tuple[dict[str, Any], dict[str, Any]]:
    """The start every update must name (start.identity) and its tensors, computed as a site does."""
    from peft import PeftModel, get_peft_model

    spec = rnd.spec
    if i.parent is not None and spec.training.init == "last-release":
        state = start_mod.lora_state(i.model, "parent")
        return start_mod.identity(i.parent.package_id, spec.training.seed, state), state
    train.check_target_modules(i.model.get_base_model() if isinstance(i.model, PeftModel) else i.model,
                               spec.lora.target_modules)
    cfg = train.lora_config(spec.lora)
    if isinstance(i.model, PeftModel):
        i.model.add_adapter("start", cfg)
    else:
        i.model = get_peft_model(i.model, cfg, adapter_name="start")
    start_mod.fresh_init(i.model, spec.training.seed, adapter="start")
    state = start_mod.lora_state(i.model, "start")
    return start_mod.identity(None, spec.training.seed, state), state


def used_updates(store: RouteStore) -> dict[str, str]:
    return {u: str(r.get("round")) for r in store.rounds() for u in r.get("updates", [])}


def want(rnd, i, method: str, ident: dict, names: list[str]) -> dict[str, Any]:
    spec = rnd.spec
    return {"format": updates.FORMAT, "route": spec.route_key, "round": spec.federation.round, "method": method,
            "base_model": {"sha256": i.model_id}, "start": ident, "lora": updates.lora_identity(spec.lora),
            "modules_sha256": updates.modules_digest(names)}


def merge_weights(accepted: list[updates.Screened]) -> list[float]:
    total = sum(s.weight for s in accepted)
    return [s.weight / total for s in accepted]


def _factors(reader: PayloadReader, k: int, codec: compress.Codec, a0, b0, method: str):
    """Site factors (B, A) of module ``k``: start + decoded deltas."""
    import torch
    from safetensors import SafetensorError
    from safetensors.numpy import load

    pid = reader.report.package_id
    try:
        parts = load(updates.read_or_refuse(reader, updates.delta_file(k), 4 << 30))
        a, b, other = updates.split_factors(parts)
        if other or (method == "ffa") != (not a):
            raise compress.CodecError("unexpected tensors")
        d_b = torch.from_numpy(compress.decode(b, codec))
        d_a = torch.from_numpy(compress.decode(a, codec)) if a else torch.zeros_like(a0)
    except (SafetensorError, compress.CodecError, ValueError, OverflowError) as exc:
        raise updates.BadUpdate(pid, f"module {k}: {exc}") from None
    if d_b.shape != b0.shape or d_a.shape != a0.shape:
        raise updates.BadUpdate(pid, f"module {k}: factor shapes {tuple(d_b.shape)}, {tuple(d_a.shape)} do not "
                                     f"match the start's {tuple(b0.shape)}, {tuple(a0.shape)}")
    return b0 + d_b, a0 + d_a


def merge(accepted: list[updates.Screened], identities: list, start: dict[str, Any], names: list[str], method: str,
          rank: int) -> tuple[dict[str, Any], dict[str, Any]]:
    """The merged adapter's tensors (peft names), module by module, and the merge's numbers."""
    weights = merge_weights(accepted)
    codecs = [updates.codec_of(s.federation) for s in accepted]
    errors, ranks, out = [], [], {}
    with contextlib.ExitStack() as stack:
        readers = [stack.enter_context(PayloadReader(s.path, s.report, identities)) for s in accepted]
        for r in readers:
            updates.index_ok(r, names, {updates.delta_file(k) for k in range(len(names))}, f"{len(names)} modules")
        for k, name in enumerate(names):
            a0, b0 = start[name + start_mod.A_SUFFIX], start[name + start_mod.B_SUFFIX]
            parts = ((w, *_factors(r, k, c, a0, b0, method)) for w, r, c in zip(weights, readers, codecs))
            try:
                m = merge_mod.ffa(parts, a0) if method == "ffa" else merge_mod.exact(parts, len(readers), rank)
            except merge_mod.MergeError as exc:
                raise InputError(f"module {name}: {exc}", hint="re-run the aggregation without the odd update") from None
            out[name + start_mod.A_SUFFIX], out[name + start_mod.B_SUFFIX] = m.A, m.B
            errors.append(m.truncation_error)
            ranks.append(m.rank_of_sum)
    return out, {"modules": len(names), "truncation_error_max": round(max(errors, default=0.0), 9),
                 "truncation_error_mean": round(sum(errors) / max(len(errors), 1), 9),
                 "rank_of_sum_max": max(ranks, default=0)}


def candidate(i, spec, state: dict[str, Any], rank: int):
    """``i.model`` (a PeftModel since _start) with the merged adapter as "default" (alpha scaled
    so alpha/r stays the route's)."""
    from peft import set_peft_model_state_dict

    lora = spec.lora.model_copy(update={"r": rank, "alpha": spec.lora.alpha * rank / spec.lora.r})
    i.model.add_adapter("default", train.lora_config(lora))
    device = next(i.model.parameters()).device
    result = set_peft_model_state_dict(i.model, {k: v.to(device) for k, v in state.items()}, adapter_name="default")
    missing = [k for k in result.missing_keys if ".lora_" in k and ".default." in k]
    if missing or result.unexpected_keys:
        raise InputError(f"the merged adapter does not fit the base model ({len(missing)} missing tensors)")
    i.model.set_adapter("default")
    if "start" in i.model.peft_config:
        i.model.delete_adapter("start")
    return i.model


def prepare(spec_path, req: Request, keyring, passphrase, now, input_root, output_root, *,
            reader: Callable[[Any], str] | None = None, releases: bool | None = None):
    """Everything checked before the lock: spec, flags, keys, recipients, model and feeds.
    ``reader(spec)``: the recipient key that opens the updates (default: federation.aggregator);
    ``releases``: default, unless the spec is n2he (the aggregator then writes a sum)."""
    opened = open_spec(spec_path, req, input_root, output_root, now, releases)
    spec, fed = opened.spec, opened.spec.federation
    method = req.method or fed.method
    if method == "ffa" and req.rank not in (None, spec.lora.r):
        raise InputError("--rank applies to --method exact; ffa keeps the route's rank", hint="drop --rank")
    sites = req.sites or fed.sites
    if not sites:
        raise InputError("no site allowlist: name the trusted site keys", hint="pass --site NAME (repeatable) or set "
                         "federation.sites")
    if req.quorum < 1:
        raise InputError("--quorum must be at least 1")
    if spec.privacy.mode == "n2he" and method != "ffa":
        raise InputError("--method exact is not available under privacy.mode \"n2he\": only sums are computed under "
                         "encryption", hint="drop --method (n2he rounds are ffa)")
    if spec.privacy.mode == "n2he" and req.quorum < 2:
        raise InputError("--quorum must be at least 2 under privacy.mode \"n2he\": a sum of one update is that update",
                         hint="pass --quorum 2 or more")
    policy = keyring.trust_policy(trusted=sites, route=spec.route_key, kind=updates.KIND)
    reader = reader(spec) if reader else fed.aggregator
    idents = state_keys.identities_for(keyring, [reader], passphrase)
    if not idents:
        what = "federation.aggregator" if reader == fed.aggregator else "the key that opens the updates"
        raise KeyringError(f"this keyring holds no private key for {what} {reader!r}",
                           hint="run this where that recipient key is")
    for r in spec.output.recipients:
        keyring.resolve_public(r)
    signer = keyring.signer(spec.output.signing_key, passphrase)
    prepared = inputs_stage.prepare(opened, keyring)
    store = RouteStore(opened.state, spec.route_key, now=now,
                       keys=state_keys.for_round(spec.route_key, spec.output.recipients, keyring, passphrase, signer))
    rnd = Round(opened, store, registry_for(opened, keyring, now), keyring, passphrase, signer, modes.Federated(), now,
                started=now())
    return rnd, prepared, method, policy, idents


def check_quorum(screened: updates.Screening, quorum: int, round_id: str) -> None:
    if len(screened.accepted) < quorum:
        refused = "; ".join(f"{r['path']}: {r['reason']}" for r in screened.refused) or "none refused"
        raise QuorumNotMet(f"quorum not met for round {round_id}: {len(screened.accepted)} valid updates, need "
                           f"{quorum} (refused: {refused})",
                           {"outcome": QuorumNotMet.outcome, "round": round_id, "quorum": quorum,
                            "accepted": [s.summary(0.0) for s in screened.accepted], "refused": screened.refused})


def evaluate_and_release(rnd, i, screened: updates.Screening, state: dict[str, Any], summary: dict[str, Any],
                         weights: list[float], privacy: dict[str, Any]) -> RoundResult:
    """The merged (or decrypted) adapter through the route's evaluation and release stages."""
    spec = rnd.spec
    summary = {**summary, "accepted": [s.summary(w) for s, w in zip(screened.accepted, weights)],
               "refused": screened.refused}
    rnd.record("tgflow.federation.aggregate", summary)
    rnd.record("tgflow.privacy", privacy)
    model = candidate(i, spec, state, summary["rank"])
    sel = Selection([], [], i.eval_feed.examples, [], {"federated": True, "round": spec.federation.round}, 0, 0,
                    [(v, held) for v, _, held in rnd.store.retained() if held])
    u = Update(model, Aggregated(summary), i.parent is not None, privacy)
    ev = evaluate_stage.evaluate(rnd, i, sel, u)
    return release(rnd, i, sel, u, ev, screened)


def release(rnd, i, sel, u, ev, screened: updates.Screening) -> RoundResult:
    spec = rnd.spec
    version = rnd.store.next_version() if spec.output.version == "auto" else spec.output.version
    deps = [{"uri": f"tgflow:update/{s.site_name}@{spec.federation.round}", "digest": {"sha256": s.package_id[7:]}}
            for s in screened.accepted]
    pid = release_stage.package(rnd, i, u, version, deps)
    rnd.store.retain(version, [], sel.eval)
    used = [s.package_id for s in screened.accepted]
    report = {"training": u.result.metrics(), **ev.report, "privacy": u.privacy, "outcome": PACKAGED,
              "package": str(rnd.opened.out_path), "package_id": pid, "version": version,
              "registered": {"path": str(rnd.registry.where(spec.route_key)), "alias": "candidate"},
              "parent": i.parent and {"package_id": i.parent.package_id, "version": i.parent.version}}
    rnd.commit(PACKAGED, report, {"version": version, "package_id": pid, "round": spec.federation.round,
                                  "updates": used, "parent": i.parent.package_id if i.parent else None})
    release_stage.register(rnd, pid, "fed aggregate")
    return RoundResult(PACKAGED, report, rnd.opened.out_path, pid)
