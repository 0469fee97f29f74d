"""A site's n2he update body: its ΔB clipped to privacy.n2he.max_update_norm, multiplied by
its public weight, and encrypted under the key holder's public context, one ciphertext per
payload file. The norm before clipping stays in the site's own report: in the manifest
it would tell the aggregator something about the update."""

from __future__ import annotations

from typing import Any

from tgsp.errors import InputError

from ..fed.updates import Body
from . import ckks, context, layout


def check(spec, keyring, now) -> None:
    """Before the route's lock: the context is usable and the key holder's key resolves."""
    n2he = spec.privacy.n2he
    context.public(keyring, n2he.context, max_age_days=n2he.max_key_age_days, now=now)
    if n2he.key_holder:
        if keyring.resolve_public(n2he.key_holder).kind != "recipient":
            raise InputError(f"privacy.n2he.key_holder {n2he.key_holder!r} is not a recipient key",
                             hint="import the key holder's recipient public key")


def _weight(n2he, examples: int | None) -> int:
    if n2he.weights == "equal":
        return 1
    if examples is None:
        raise InputError("privacy.n2he.weights \"examples\" needs a public example count, and under dp the true "
                         "count is private", hint="set federation.public_examples, or privacy.n2he.weights \"equal\"")
    return examples


def body(rnd, sel, u, final: dict, names: list[str], examples: int | None) -> Body:
    n2he = rnd.spec.privacy.n2he
    pub = context.public(rnd.keyring, n2he.context, max_age_days=n2he.max_key_age_days, now=rnd.now)
    weight = _weight(n2he, examples)
    if weight * n2he.max_update_norm >= pub.params.max_abs:
        raise InputError(f"weight {weight} x max_update_norm {n2he.max_update_norm:g} is over what these CKKS "
                         "parameters decode", hint="lower privacy.n2he.max_update_norm, or weight equally")
    clipped, norm = layout.clip(layout.update_vector(u.start, final, names), n2he.max_update_norm)
    vec = clipped * weight
    he = layout.he_section(pub.params, pub.id, len(vec), weight, n2he.max_update_norm, n2he.custody)
    holder = [rnd.keyring.resolve_public(n2he.key_holder).key] if n2he.key_holder else []
    report: dict[str, Any] = {**he, "norm_before_clip": round(norm, 6), "clipped": norm > n2he.max_update_norm,
                              "ciphertext_bytes": 0}  # the site's own report: the manifest gets ``he`` only

    def files() -> dict[str, bytes]:
        out = {layout.ct_file(k): ct for k, ct in enumerate(ckks.encrypt(pub.ctx, vec, pub.params))}
        report["ciphertext_bytes"] += sum(len(ct) for ct in out.values())
        return out

    privacy = {"mode": "n2he", "custody": n2he.custody, "context": pub.id, "max_update_norm": n2he.max_update_norm,
               "training": rnd.mode.manifest(u.privacy)}
    return Body({"he": he, "bytes": {"float32": len(vec) * 4}}, files, holder, privacy, {"he": report})
