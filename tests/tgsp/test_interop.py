"""Interoperability with independent implementations."""

from __future__ import annotations

import json

import pytest
from pqcrypto.sign import ml_dsa_65 as pq

from tgsp import _sig, dsse, manifest as mf
from tgsp.keys import PrivateKey, PublicKey, component_keyid
from tgsp.package import open_package


def test_ed25519_part_of_envelope_verifies_with_securesystemslib(world):
    from securesystemslib.dsse import Envelope
    from securesystemslib.signer import SSlibKey

    with open_package(world.pkg) as pkg:
        raw = pkg.read(mf.ENVELOPE_ENTRY)
    env_dict = json.loads(raw)
    ed_pub = world.signer.key.public.public["ed25519"]
    keyid = component_keyid("ed25519", ed_pub)
    key = SSlibKey(keyid, "ed25519", "ed25519", {"public": ed_pub.hex()})
    # Standard DSSE tooling sees only the Ed25519 signature it knows how to check.
    env_dict["signatures"] = [s for s in env_dict["signatures"] if s["keyid"] == keyid]
    env = Envelope.from_dict(env_dict)
    assert env.payload_type == dsse.MANIFEST_TYPE
    verified = env.verify([key], 1)
    assert keyid in verified
    # And it is not a rubber stamp: another key fails.
    other = PrivateKey.generate("signing").public.public["ed25519"]
    from securesystemslib.exceptions import VerificationError

    with pytest.raises(VerificationError):
        env.verify([SSlibKey(keyid, "ed25519", "ed25519", {"public": other.hex()})], 1)


def test_mldsa_cryptography_signature_verifies_with_pqcrypto():
    key = PrivateKey.generate("signing")
    msg = dsse.pae(dsse.MANIFEST_TYPE, b"payload")
    sig = _sig.sign("ml-dsa-65", key.seeds["ml-dsa-65"], msg)
    pq.verify(key.public.public["ml-dsa-65"], msg, sig)  # raises if invalid
    with pytest.raises(Exception):
        pq.verify(key.public.public["ml-dsa-65"], msg + b"x", sig)


def test_mldsa_pqcrypto_signature_verifies_with_cryptography():
    pk, sk = pq.keygen()
    msg = dsse.pae(dsse.MANIFEST_TYPE, b"payload")
    sig = pq.sign(sk, msg)
    assert _sig.verify("ml-dsa-65", pk, msg, sig)
    assert not _sig.verify("ml-dsa-65", pk, msg + b"x", sig)


def test_hybrid_verify_needs_both_components():
    key = PrivateKey.generate("signing")
    sigs = dict(key.sign_hybrid("t", b"p"))
    key.public.verify_hybrid("t", b"p", sigs)
    for kid in list(sigs):
        partial = {k: v for k, v in sigs.items() if k != kid}
        with pytest.raises(Exception, match="missing"):
            key.public.verify_hybrid("t", b"p", partial)


def test_public_key_round_trip_and_size_checks():
    pub = PrivateKey.generate("recipient").public
    assert PublicKey.from_dict(pub.to_dict()) == pub
    bad = pub.to_dict()
    bad["public"]["x25519"] = bad["public"]["x25519"][:-4] + "AAA="
    with pytest.raises(Exception):
        PublicKey.from_dict({"kind": "recipient", "public": {"x25519": "AAAA", "ml-kem-768": bad["public"]["ml-kem-768"]}})
