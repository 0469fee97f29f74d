#!/usr/bin/env python3
"""Regenerate the federation test vectors in tests/vectors/federation/: a route index, a
plaintext federated update, and an n2he update pair with its he-sum (docs/format.md §11-§13).

    python scripts/make_fed_vectors.py

They use the TGSP vector keys (tests/vectors/keyring, made by scripts/make_vectors.py) and an
HE key kept in the same keyring, and the project's own encoders (runners/fed, runners/n2he).
Times are fixed; ciphertexts, wrapped keys and ML-DSA signatures are random, so ids change on
every run: review expected.json's diff before committing.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import sys
import tempfile
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import tgsp  # noqa: E402
from runners.fed import compress, updates  # noqa: E402
from runners.n2he import ckks, context, layout  # noqa: E402
from runners.state.registry import Registry  # noqa: E402
from scripts.make_vectors import EXPIRES, VECTORS, pp  # noqa: E402
from tgsp.he_store import HEKeys  # noqa: E402

OUT = VECTORS / "federation"
T = datetime(2026, 3, 1, 12, 0, 0, tzinfo=timezone.utc)
ROUTE, ROUND = "vectors", "2026-03-01"
NAMES = ["model.layers.0.self_attn.q_proj", "model.layers.0.self_attn.v_proj"]  # module names, sorted
SHAPES = {"A": (4, 16), "B": (16, 4)}  # r = 4, d = 16


def _fixed() -> datetime:
    return T


def deltas(site: str) -> dict[str, dict[str, np.ndarray]]:
    """Deterministic factor deltas per module, from SHAKE-256 of the site's name."""
    out = {}
    for name in NAMES:
        raw = hashlib.shake_256(f"{site}/{name}".encode()).digest(4 * (64 + 64))
        vals = (np.frombuffer(raw, dtype="<u4").astype(np.float64) / 2**32 - 0.5).astype(np.float32) * 0.02
        out[name] = {"A": vals[:64].reshape(SHAPES["A"]), "B": vals[64:].reshape(SHAPES["B"])}
    return out


def federation(method: str, examples: int, **body) -> dict:
    """An update's federation section (format.md §12), for a fresh start of seed 0."""
    return {"format": updates.FORMAT, "route": ROUTE, "round": ROUND, "method": method,
            "base_model": {"sha256": "0" * 64},
            "start": {"package_id": None, "init": "fresh", "seed": 0, "adapter_sha256": "1" * 64},
            "lora": {"r": 4, "alpha": 8, "target_modules": ["q_proj", "v_proj"]},
            "modules_sha256": updates.modules_digest(NAMES), "modules": len(NAMES), "examples": examples,
            "weight_basis": "examples", **body}


def _folder(tmp: Path, name: str) -> Path:
    folder = tmp / name
    folder.mkdir()
    (folder / updates.INDEX).write_text(json.dumps({"format": updates.INDEX_FORMAT, "modules": NAMES}))
    return folder


def plain_update(kr, tmp: Path) -> dict:
    """method "exact", int8-block codec of block 16: both factors' deltas per module."""
    from safetensors.numpy import save_file

    codec = compress.Codec("int8-block", 16, None)
    folder = _folder(tmp, "update")
    (folder / "delta").mkdir()
    encoded = 0
    for k, (name, factors) in enumerate(deltas("site-a").items()):
        parts = {}
        for factor in ("A", "B"):
            enc, _ = compress.encode(factors[factor], codec)
            parts.update({f"{factor}.{p}": v for p, v in enc.items()})
        encoded += compress.stored_bytes(parts)
        save_file(parts, str(folder / updates.delta_file(k)))
    fed = federation("exact", 40, compression=codec.to_dict(),
                     bytes={"float32": 4 * 128 * len(NAMES), "encoded": encoded})
    res = tgsp.build(folder, OUT / "update.tgsp", route=ROUTE, kind=updates.KIND, signers=[kr.signer("vector-signer", pp)],
                     recipients=[kr.public_file("vector-recipient").key], now=_fixed, expires=EXPIRES,
                     extra={"federation": fed, "privacy": {"mode": "off"}})
    return {"package_id": res.package_id, "modules": NAMES, "codec": codec.to_dict(),
            "decoded_sha256": {f"{n}.{f}": _digest(compress.decode(_parts(folder, k, f), codec))
                               for k, n in enumerate(NAMES) for f in ("A", "B")}}


def _parts(folder: Path, k: int, factor: str) -> dict[str, np.ndarray]:
    from safetensors.numpy import load_file

    parts = load_file(str(folder / updates.delta_file(k)))
    return {p.split(".", 1)[1]: v for p, v in parts.items() if p.startswith(factor + ".")}


def _digest(a: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(a, dtype="<f4").tobytes()).hexdigest()


def he_vectors(kr, tmp: Path) -> dict:
    """Two n2he updates (weights 3 and 5) and the aggregator's he-sum of them."""
    store = HEKeys(kr)
    if not store.is_own("vector-he"):
        context.generate(kr, "vector-he", pp)
    pub = context.public(kr, "vector-he")
    n = sum(SHAPES["B"][0] * SHAPES["B"][1] for _ in NAMES)
    sums, ids, cts = np.zeros(n), [], []
    for site, weight, key in (("site-a", 3, "vector-signer"), ("site-b", 5, "vector-rotating")):  # two sites, two keys
        vec = np.concatenate([deltas(site)[name]["B"].reshape(-1) for name in NAMES]).astype(np.float64) * weight
        sums += vec
        folder = _folder(tmp, f"he-{site}")
        (folder / "he").mkdir()
        blobs = list(ckks.encrypt(pub.ctx, vec, pub.params))
        for k, ct in enumerate(blobs):
            (folder / layout.ct_file(k)).write_bytes(ct)
        cts.append(blobs)
        he = layout.he_section(pub.params, pub.id, n, weight, 1.0, "key-holder")
        fed = federation("ffa", weight, he=he, bytes={"float32": 4 * n})
        res = tgsp.build(folder, OUT / f"update-he-{site}.tgsp", route=ROUTE, kind=updates.KIND,
                         signers=[kr.signer(key, pp)], recipients=[kr.public_file("vector-recipient").key],
                         now=_fixed, expires=EXPIRES,
                         extra={"federation": fed, "privacy": {"mode": "n2he", "custody": "key-holder",
                                                               "context": pub.id, "max_update_norm": 1.0}})
        ids.append((site, weight, res.package_id, kr.public_file(key).lineage.walk()[0].key.keyid))
    import tenseal as ts

    folder = _folder(tmp, "he-sum")
    (folder / "he").mkdir()
    for k, (a, b) in enumerate(zip(*cts)):
        total = ts.ckks_vector_from(pub.ctx, a) + ts.ckks_vector_from(pub.ctx, b)
        (folder / layout.ct_file(k)).write_bytes(total.serialize())
    summed = [{"update": pid, "site": site, "site_key": root, "weight": w, "examples": w,
               "privacy": {"mode": "n2he"}} for site, w, pid, root in ids]
    want = {k: v for k, v in federation("ffa", 0).items() if k in updates.MATCHED}
    fed = {**want, "format": layout.SUM_FORMAT, "quorum": 2, "summed": summed,
           "he": {**{k: v for k, v in layout.he_section(pub.params, pub.id, n, 1, 1.0, "key-holder").items()
                     if k in ("layout", "context", "params", "values", "ciphertexts")},
                  "total_weight": 8, "norm_bound": 8.0}}
    res = tgsp.build(folder, OUT / "he-sum.tgsp", route=ROUTE, kind=layout.SUM_KIND,
                     signers=[kr.signer("vector-signer", pp)], recipients=[kr.public_file("vector-recipient").key],
                     now=_fixed, expires=EXPIRES, extra={"federation": fed, "privacy": {"mode": "n2he", "sum_of": 2}})
    (OUT / "vector-he.public.json").write_text(json.dumps(pub.file.to_dict()) + "\n")
    return {"package_id": res.package_id, "context_id": pub.id, "values": n, "total_weight": 8,
            "updates": {site: pid for site, _, pid, _ in ids}, "sum_first_8": [round(float(v), 6) for v in sums[:8]],
            "sum_sha256_rounded_2^-22": _digest(np.round(sums * 2**22) / 2**22)}


def route_index(kr, tmp: Path) -> dict:
    """The registry of route "vectors" after registering plain-signed.tgsp as production."""
    reg = Registry(tmp / "registry", kr.trust_policy(), now=_fixed)
    entry = reg.register(VECTORS / "plain-signed.tgsp", kr.signer("vector-signer", pp), alias="production")
    route = OUT / "registry" / "routes" / "vectors"
    if route.exists():
        shutil.rmtree(route)
    shutil.copytree(tmp / "registry" / "routes" / "vectors", route)
    raw = (route / "index.json").read_bytes()
    return {"index_sha256": hashlib.sha256(raw).hexdigest(), "version": 1, "alias": "production",
            "package_id": entry["package_id"], "file": entry["file"]}


def main() -> None:
    kr = tgsp.Keyring(VECTORS / "keyring", now=_fixed)
    OUT.mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        expected = {"route-index": route_index(kr, Path(tmp)), "update.tgsp": plain_update(kr, Path(tmp)),
                    "he": he_vectors(kr, Path(tmp))}
    (OUT / "expected.json").write_text(json.dumps(expected, indent=2, sort_keys=True) + "\n")
    print(f"wrote the federation vectors to {OUT}")


if __name__ == "__main__":
    main()
