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


@pytest.mark.parametrize("name", ["encrypted-signed.tgsp", "rotated-v2.tgsp"])
def test_encrypted_vectors_decrypt_to_the_source(name, tmp_path):
    ids = Keyring(V / "keyring").identities("vector-recipient", lambda: PASS)
    out = tmp_path / "out"
    tgsp.unpack(V / name, out, policy("vector-signer", "vector-rotating"), identities=ids)
    assert files_of(out) == files_of(V / "source")
