"""The shipped test vectors still verify, decrypt, and keep their ids."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import tgsp
from tgsp.keyring import Keyring
from tgsp.keyring_trust import load_public_file

from tests.helpers import files_of

V = Path(__file__).resolve().parents[1] / "vectors"
EXPECTED = json.loads((V / "expected.json").read_text())
PASS = "tgflow-test-vectors-not-secret"


def policy(*names):
    return tgsp.TrustPolicy(trusted=[load_public_file(V / "trust" / f"{n}.pub.json") for n in names])


@pytest.mark.parametrize("name,signer", [
    ("plain-signed.tgsp", "vector-signer"),
    ("encrypted-signed.tgsp", "vector-signer"),
    ("rotated-v2.tgsp", "vector-rotating"),
    ("sharded-encrypted.tgsp", "vector-signer"),
])
def test_vector_verifies_with_its_recorded_id(name, signer):
    report = tgsp.verify(V / name, policy(signer))
    assert report.ok, report.to_dict()
    assert report.package_id == EXPECTED[name]["package_id"]
    assert {f["path"]: f["sha256"] for f in report.manifest["files"]} == EXPECTED[name]["files"]


def test_rotation_vector_needs_the_chain_walk():
    report = tgsp.verify(V / "rotated-v2.tgsp", policy("vector-rotating"))
    signer = report.manifest["signers"][0]
    trusted = load_public_file(V / "trust" / "vector-rotating.pub.json")
    assert signer["version"] == 2 and trusted.version == 1 and signer["keyid"] != trusted.keyid


def test_vector_is_rejected_by_the_wrong_trust_store():
    assert not tgsp.verify(V / "plain-signed.tgsp", policy("vector-rotating")).ok


@pytest.mark.parametrize("name", ["encrypted-signed.tgsp", "rotated-v2.tgsp", "sharded-encrypted.tgsp"])
def test_encrypted_vectors_decrypt_to_the_source(name, tmp_path):
    ids = Keyring(V / "keyring").identities("vector-recipient", lambda: PASS)
    out = tmp_path / "out"
    tgsp.unpack(V / name, out, policy("vector-signer", "vector-rotating"), identities=ids)
    assert files_of(out) == files_of(V / "source")


@pytest.mark.parametrize("name", ["sharded-encrypted.tgsp"])
def test_sharded_vectors_match_an_independent_reading(name):
    """format.md §3.1 computed with tarfile and hashlib alone: each shard's SHA-256 of the
    stored entry, the root over them, and the manifest's critical list."""
    import hashlib
    import tarfile

    want = EXPECTED[name]["stored_shards"]["adapter_model.safetensors"]
    with tarfile.open(V / name) as tar:
        stored = tar.extractfile("payload/adapter_model.safetensors").read()
        env = json.loads(tar.extractfile("envelope.json").read())
    import base64

    manifest = json.loads(base64.b64decode(env["payload"]))
    size = want["size"]
    shards = [hashlib.sha256(stored[i:i + size]).hexdigest() for i in range(0, len(stored), size)]
    root = hashlib.sha256(b"tgsp/1 sharded sha256\x00" + len(stored).to_bytes(8, "big") + size.to_bytes(8, "big")
                          + b"".join(bytes.fromhex(d) for d in shards)).hexdigest()
    assert len(shards) == 3 and shards == want["sha256"] and root == want["root"]
    entry = next(f for f in manifest["files"] if f["path"] == "adapter_model.safetensors")
    assert entry["stored"] == {"size": len(stored), "sha256": root, "shards": {"size": size, "sha256": shards}}
    assert "shards" in manifest["critical"]
