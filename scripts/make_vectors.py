#!/usr/bin/env python3
"""Regenerate the TGSP v1 test vectors in tests/vectors/.

    python scripts/make_vectors.py            # new packages, same keys
    python scripts/make_vectors.py --new-keys # also new keys (ids change)
    python scripts/make_vectors.py --only sharded-encrypted.tgsp
                                              # just these; the others keep their bytes

The keys are test-only; their passphrase is public (see tests/vectors/README.md).
Times are fixed, so what is not random (everything but ciphertext, wrapped
keys and ML-DSA signatures) is reproducible byte for byte.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import sys
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import tgsp  # noqa: E402
import tgsp.lineage  # noqa: E402
from tgsp import Keyring  # noqa: E402

VECTORS = ROOT / "tests" / "vectors"
PASSPHRASE = "tgflow-test-vectors-not-secret"
T_BUILD = datetime(2026, 1, 15, 12, 0, 0, tzinfo=timezone.utc)
T_ROTATE = datetime(2026, 2, 1, 0, 0, 0, tzinfo=timezone.utc)
T_SIGN_V2 = datetime(2026, 2, 2, 0, 0, 0, tzinfo=timezone.utc)  # a version signs only after it exists
EXPIRES = datetime(2099, 12, 31, 0, 0, 0, tzinfo=timezone.utc)


def pp() -> str:
    return PASSPHRASE


def source(folder: Path) -> Path:
    """A tiny PEFT-shaped adapter folder, fully deterministic."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "adapter_config.json").write_text(json.dumps({
        "base_model_name_or_path": "examples/tiny-base", "peft_type": "LORA", "r": 4, "lora_alpha": 8,
        "lora_dropout": 0.0, "target_modules": ["q_proj", "v_proj"], "task_type": "CAUSAL_LM"}, indent=2) + "\n")
    weights = hashlib.shake_256(b"tgflow vector weights").digest(10_000)
    (folder / "adapter_model.safetensors").write_bytes(weights)
    (folder / "README.md").write_text("Test-vector adapter (not a real model).\n")
    return folder


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    ap.add_argument("--new-keys", action="store_true")
    ap.add_argument("--only", nargs="+", metavar="NAME", help="rebuild only these vectors")
    args = ap.parse_args()
    home = VECTORS / "keyring"
    if args.new_keys and home.exists():
        shutil.rmtree(home)
    kr = Keyring(home, now=lambda: T_BUILD)
    if not (home / "keys" / "vector-signer.json").exists():
        kr.generate("vector-signer", "signing", pp)
        kr.generate("vector-recipient", "recipient", pp)
        kr.generate("vector-rotating", "signing", pp)
        Keyring(home, now=lambda: T_ROTATE).rotate("vector-rotating", pp)
    src = source(VECTORS / "source")
    recipient = kr.public_file("vector-recipient").key
    fixed = lambda: T_BUILD  # noqa: E731
    builds = {
        "plain-signed.tgsp": dict(signers=[kr.signer("vector-signer", pp)]),
        "encrypted-signed.tgsp": dict(signers=[kr.signer("vector-signer", pp)], recipients=[recipient]),
        "rotated-v2.tgsp": dict(signers=[kr.signer("vector-rotating", pp)], recipients=[recipient],
                                now=lambda: T_SIGN_V2),
        # format.md §3.1: 4 KiB shards, so the 10,048 stored bytes of the weights span three
        "sharded-encrypted.tgsp": dict(signers=[kr.signer("vector-signer", pp)], recipients=[recipient],
                                       shard_size=4096),
    }
    if args.only:
        builds = {name: builds[name] for name in args.only}
    expected = json.loads((VECTORS / "expected.json").read_text()) if args.only else {}
    for name, kw in builds.items():
        kw.setdefault("now", fixed)
        res = tgsp.build(src, VECTORS / name, route="vectors", version=1, kind="adapter", expires=EXPIRES,
                         chunk_size=4096, **kw)
        expected[name] = {"package_id": res.package_id,
                          "files": {f["path"]: f["sha256"] for f in res.manifest["files"]}}
        shards = {f["path"]: {"root": f["stored"]["sha256"], **f["stored"]["shards"]}
                  for f in res.manifest["files"] if "shards" in f["stored"]}
        if shards:
            expected[name]["stored_shards"] = shards
    trust = VECTORS / "trust"
    trust.mkdir(exist_ok=True)
    for name in ("vector-signer", "vector-rotating"):
        pub = kr.public_file(name)
        if name == "vector-rotating":  # a verifier that only ever saw version 1 (and its own time)
            v1_created = kr._load_key(name)["versions"][0]["created"]
            pub = tgsp.PublicKeyFile(pub.name, pub.kind, 1, v1_created, pub.lineage.root,
                                     tgsp.lineage.Lineage(pub.lineage.root))
        (trust / f"{name}.pub.json").write_text(json.dumps(pub.to_dict(), indent=2) + "\n")
    (VECTORS / "expected.json").write_text(json.dumps(expected, indent=2, sort_keys=True) + "\n")
    print(f"wrote {len(builds)} vectors to {VECTORS}")


if __name__ == "__main__":
    main()
