"""Trying adapters from packages: ``peft generate`` and ``route eval``.

Both verify the package, decrypt the adapter into memory (never to disk),
and apply it to the base model the package's evidence names (its digest is
checked), so what is tried is exactly what was signed.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import tgsp
from tgsp.errors import InputError

from ..data import feeds as feeds_mod
from ..learn import adapters, metrics, model as model_mod, sampling as sampling_mod
from ..spec import FeedSpec
from ..state.registry import Registry, find


def base_for(release: adapters.Release, base_model: Path | None) -> Path:
    """The base model folder: ``base_model``, else the evidence's reference; its digest must match."""
    ref = str(base_model) if base_model else release.base_model.get("ref")
    if not ref:
        raise InputError("the package's evidence names no base model", hint="pass --base-model DIR")
    folder = model_mod.resolve_model(ref, Path.cwd())
    digest = tgsp.canonical.sha256_hex(tgsp.canonical.encode(model_mod.model_digest(folder)))
    if digest != release.base_model.get("sha256"):
        raise InputError(f"base model {folder} is not the one adapter {release.package_id[:19]} was trained on "
                         "(its files' digest differs from the evidence)", hint="pass --base-model with the right folder")
    return folder


def _load(folder: Path):
    device = model_mod.pick_device("auto")
    tok, model = model_mod.load(folder, device)
    model.config.use_cache = True  # generation, not training
    return tok, model, device


def generate(package: Path, policy, identities: list, prompt: str, *, against_base: bool,
             base_model: Path | None = None, sampling: sampling_mod.Sampling | None = None,
             he: bool = False) -> dict[str, Any]:
    """The adapter's completions of ``prompt`` (and the base model's, with the same seed); with
    ``he``, also the completions with the adapter's delta computed under CKKS (experimental)."""
    s = sampling_mod.check(sampling or sampling_mod.Sampling())
    release = adapters.read_release(package, policy, identities)
    tok, model, device = _load(base_for(release, base_model))
    out: dict[str, Any] = {"package_id": release.package_id, "route": release.route, "version": release.version,
                           "prompt": prompt, "sampling": s.public(), "samples": {}}
    if against_base:
        out["samples"]["base"] = sampling_mod.generate(model, tok, prompt, device.name, s)
        out["base"] = out["samples"]["base"][0]
    peft_model = adapters.attach(model, release, "default")
    out["samples"]["adapter"] = sampling_mod.generate(peft_model, tok, prompt, device.name, s)
    out["adapter"] = out["samples"]["adapter"][0]
    if he:
        out["he"] = _he_generate(peft_model, tok, prompt, device.name, s, out["samples"])
    return out


def _he_generate(peft_model, tok, prompt: str, device: str, s, samples: dict) -> dict[str, Any]:
    from ..learn import he_lora

    session = he_lora.HELoRA(peft_model)
    t = time.perf_counter()
    with session.active():
        samples["he"] = sampling_mod.generate(peft_model, tok, prompt, device, s)
    return session.report(seconds_total=time.perf_counter() - t,
                          equal_to_plaintext=samples["he"] == samples["adapter"])


def evaluate(registry: Registry, route: str, candidate: int, against: str, feed: FeedSpec, identities: list, *,
             base_model: Path | None = None, max_len: int = 256) -> dict[str, Any]:
    """Both adapters on the same data: loss, exact match, choice accuracy, and the regression."""
    doc = registry.require(route)
    cand_entry = find(doc, candidate)
    target = doc["aliases"].get(against) if not against.isdigit() else {"package_id": find(doc, int(against))["package_id"]}
    if target is None:
        raise InputError(f"route {route!r} has no alias {against!r}", hint="give --against production or a VERSION")
    against_entry = next(e for e in doc["packages"] if e["package_id"] == target["package_id"])
    policy = registry.policy
    cand = adapters.read_release(registry.package_path(route, cand_entry), policy, identities)
    other = adapters.read_release(registry.package_path(route, against_entry), policy, identities)
    folder = base_for(cand, base_model)
    tok, model, device = _load(folder)
    examples = feeds_mod.load_feed(feed, Path.cwd(), keyring=None).examples
    model = adapters.attach(model, cand, "candidate")
    adapters.attach(model, other, "against")
    results = {}
    for name in ("candidate", "against"):
        model.set_adapter(name)
        results[name] = metrics.measure(model, tok, examples, device.name, max_len)
    drop = metrics.regression(results["against"], results["candidate"])
    return {"route": route, "eval": {"source": feed.uri, "examples": len(examples)},
            "candidate": {"version": cand.version, "package_id": cand.package_id, **results["candidate"]},
            "against": {"alias": against, "version": other.version, "package_id": other.package_id,
                        **results["against"], "regression": drop, "regressed": any(v > 1e-9 for v in drop.values())}}


def score(package: Path, policy, identities: list, examples: list, *, max_len: int = 256) -> dict[str, Any]:
    """One released adapter's task metrics on ``examples`` (verified, decrypted in memory)."""
    release = adapters.read_release(package, policy, identities)
    tok, model, device = _load(base_for(release, None))
    model = adapters.attach(model, release, "default")
    return metrics.measure(model, tok, examples, device.name, max_len)
