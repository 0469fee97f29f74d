"""The site's ending stage: a federated round ends at an update, not a release.

The update is the trained adapter's delta against the round's start adapter,
factor by factor, compressed (runners/fed/compress.py), signed by the site key and
encrypted to the aggregator only. The site's route store records the round
(outcome ``update``), the data it consumed, and the top-k remainder it carries.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np

import tgsp
from tgsp import clock
from tgsp.builder import in_memory

from ..data.neardup import near_key
from ..fed import compress, start as start_mod, updates
from ..learn.batches import tokenize
from ..learn.evaluate import mean_loss, relative_change
from .context import UPDATE
from .release import dependencies


def _deltas(start: dict, final: dict, name: str, method: str) -> dict[str, np.ndarray]:
    out = {"B": (final[name + start_mod.B_SUFFIX] - start[name + start_mod.B_SUFFIX]).numpy()}
    d_a = (final[name + start_mod.A_SUFFIX] - start[name + start_mod.A_SUFFIX]).numpy()
    if method == "ffa":
        if np.abs(d_a).max(initial=0.0) != 0.0:
            raise RuntimeError("ffa: the frozen A factor changed during training")
    else:
        out["A"] = d_a
    return out


def encode_all(start: dict, final: dict, names: list[str], codec: compress.Codec, method: str,
               residual: dict[str, np.ndarray]) -> tuple[list[dict[str, np.ndarray]], dict[str, np.ndarray]]:
    """Each module's encoded parts ({"A.q": ..., "B.scale": ...}) and the new residual (top-k only)."""
    files, carried = [], {}
    for name in names:
        parts: dict[str, np.ndarray] = {}
        for factor, delta in _deltas(start, final, name, method).items():
            key = f"{name}.{factor}"
            enc, rest = compress.encode(delta, codec, residual.get(key))
            parts.update({f"{factor}.{k}": v for k, v in enc.items()})
            if rest is not None:
                carried[key] = rest.reshape(delta.shape)
        files.append(parts)
    return files, carried


def decoded_state(start: dict, files: list[dict[str, np.ndarray]], names: list[str], codec: compress.Codec) -> dict:
    """start + decoded deltas: the adapter the aggregator will see from this update."""
    import torch

    out = dict(start)
    for name, parts in zip(names, files):
        a, b, _ = updates.split_factors(parts)
        for sub, suffix in ((a, start_mod.A_SUFFIX), (b, start_mod.B_SUFFIX)):
            if sub:
                out[name + suffix] = start[name + suffix] + torch.from_numpy(compress.decode(sub, codec))
    return out


def _loss_with(u, i, data, state: dict) -> float:
    from peft import set_peft_model_state_dict

    set_peft_model_state_dict(u.model, {k: v.to(i.device.name) for k, v in state.items()}, adapter_name="default")
    return mean_loss(u.model, i.tok, data, i.device.name)


def _gated(rnd, i, sel, u, final: dict, names: list[str], codec: compress.Codec):
    """Top-k, kept only if the site's held-out loss rises at most max_loss_increase over the dense update."""
    fed = rnd.spec.federation
    dense_codec = compress.Codec(codec.quantize, codec.block, None)
    if codec.topk is None:
        return encode_all(u.start, final, names, codec, fed.method, {})[0], {}, codec, None
    sparse, carried = encode_all(u.start, final, names, codec, fed.method, rnd.store.residual())
    dense = encode_all(u.start, final, names, dense_codec, fed.method, {})[0]
    data = tokenize(i.tok, sel.eval, rnd.spec.training.max_seq_len)
    loss_dense = _loss_with(u, i, data, decoded_state(u.start, dense, names, dense_codec))
    loss_sparse = _loss_with(u, i, data, decoded_state(u.start, sparse, names, codec))
    rise = relative_change(loss_dense, loss_sparse)
    keep = rise <= fed.compression.max_loss_increase
    gate = {"topk": codec.topk, "eval_loss_dense": round(loss_dense, 6), "eval_loss_sparse": round(loss_sparse, 6),
            "rise": round(rise, 6), "max_loss_increase": fed.compression.max_loss_increase,
            "sent": "sparse" if keep else "dense"}
    rnd.record("tgflow.federation.topk-gate", gate)
    return (sparse, carried, codec, gate) if keep else (dense, {}, dense_codec, gate)


def _weight(rnd, sel) -> tuple[int | None, str]:
    fed = rnd.spec.federation
    if rnd.mode.private_counts:  # the true count is private: only a declared, public one travels
        return fed.public_examples, ("public" if fed.public_examples else "none")
    return len(sel.train), "examples"


def describe(rnd, i, sel, u, names: list[str]) -> dict[str, Any]:
    """The federation fields every update carries, whatever its body."""
    fed, spec = rnd.spec.federation, rnd.spec
    examples, basis = _weight(rnd, sel)
    return {"format": updates.FORMAT, "route": spec.route_key, "round": fed.round, "method": fed.method,
            "base_model": {"sha256": i.model_id},
            "start": start_mod.identity(i.parent.package_id if u.warm_start else None, spec.training.seed, u.start),
            "lora": updates.lora_identity(spec.lora), "modules_sha256": updates.modules_digest(names),
            "modules": len(names), "examples": examples, "weight_basis": basis}


def _dense_bytes(u, method: str) -> int:
    return sum(v.numel() * 4 for k, v in u.start.items() if method != "ffa" or k.endswith(start_mod.B_SUFFIX))


def plain_body(rnd, i, sel, u, final: dict, names: list[str]) -> updates.Body:
    spec = rnd.spec
    files, carried, codec, gate = _gated(rnd, i, sel, u, final, names, compress.Codec.from_spec(spec.federation.compression))
    fed = {"compression": codec.to_dict(), "bytes": {"float32": _dense_bytes(u, spec.federation.method),
                                                    "encoded": sum(compress.stored_bytes(p) for p in files)}}
    after = (lambda: rnd.store.set_residual(carried)) if spec.federation.compression.topk is not None else (lambda: None)
    return updates.Body(fed, lambda: delta_files(files), [], rnd.mode.manifest(u.privacy), {"topk_gate": gate},
                after)


def index_file(names: list[str]) -> dict[str, bytes]:
    return {updates.INDEX: json.dumps({"format": updates.INDEX_FORMAT, "modules": names}).encode()}


def delta_files(files: list[dict]) -> dict[str, bytes]:
    """The update's plaintext deltas as safetensors bytes, in memory: they are encrypted into the
    package as they are written, and never touch disk in the clear."""
    from safetensors.numpy import save

    return {updates.delta_file(k): save(parts) for k, parts in enumerate(files)}


def _body(rnd, i, sel, u, final: dict, names: list[str]) -> updates.Body:
    """The mode's update body: the plaintext deltas, or (n2he) ciphertexts."""
    return rnd.mode.update_body(rnd, sel, u, final, names, _weight(rnd, sel)[0],
                                lambda: plain_body(rnd, i, sel, u, final, names))


def emit(rnd, i, sel, u) -> tuple[str, dict[str, Any]]:
    """Write the update package; commit the round. Returns (package id, report)."""
    spec = rnd.spec
    final, names = start_mod.lora_state(u.model), start_mod.modules(u.start)
    body = _body(rnd, i, sel, u, final, names)
    fed = {**describe(rnd, i, sel, u, names), **body.federation}
    rnd.record("tgflow.federation.update", fed)  # not body.report: the evidence travels with the update
    rnd.record("tgflow.round.end", {"outcome": UPDATE, "started": clock.fmt(rnd.started), "finished": clock.fmt(rnd.now())})
    built = tgsp.build(rnd.opened.out_path.parent, rnd.opened.out_path,
                       files=in_memory({**index_file(names), **body.files()}), route=spec.route_key,
                       version=i.parent.version if i.parent else 0, kind=updates.KIND,
                       recipients=[rnd.keyring.resolve_public(spec.federation.aggregator).key, *body.recipients],
                       signers=[rnd.signer], events=rnd.events, now=rnd.now,
                       external={"run_spec_sha256": rnd.opened.digest, "route_key": spec.route_key},
                       extra={"federation": fed, "privacy": body.privacy},
                       dependencies=dependencies(rnd, i))
    if rnd.mode.uses_history:
        rnd.store.add_seen({e.digest for e in sel.novel}, {near_key(e) for e in sel.novel})
    body.after()
    rnd.checkpoints.clear()
    rnd.mode.settle(rnd, UPDATE)
    report = {"novelty": sel.summary, "training": u.result.metrics(private=not rnd.mode.uses_history),
              "privacy": u.privacy, "outcome": UPDATE, "package": str(rnd.opened.out_path),
              "package_id": built.package_id, "federation": {**fed, **body.report},
              "parent": {"package_id": i.parent.package_id, "version": i.parent.version} if u.warm_start else None}
    rnd.commit(UPDATE, report, {"package_id": built.package_id, "round": spec.federation.round})
    return built.package_id, report
