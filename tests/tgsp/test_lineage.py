"""Key rotation chains and revocation, as a verifier sees them."""

from __future__ import annotations

import copy
from datetime import datetime, timedelta, timezone

import pytest

import tgsp
from tgsp import canonical, lineage as L
from tgsp.errors import FormatError, RotationError
from tgsp.keyring import Keyring

from tests.helpers import make_adapter, pp


@pytest.fixture
def rotated(tmp_path):
    """A key at version 3, a verifier that only ever imported version 1."""
    kr = Keyring(tmp_path / "signer")
    v1 = kr.generate("rel", "signing", pp)
    v1_file = tmp_path / "rel-v1.json"
    v1_file.write_text(canonical.encode(v1.to_dict()).decode())
    src = make_adapter(tmp_path / "src")
    old_pkg = tmp_path / "old.tgsp"
    tgsp.build(src, old_pkg, signers=[kr.signer("rel", pp)])
    kr.rotate("rel", pp)
    kr.rotate("rel", pp)
    new_pkg = tmp_path / "new.tgsp"
    tgsp.build(src, new_pkg, signers=[kr.signer("rel", pp)])
    verifier = Keyring(tmp_path / "verifier")
    verifier.import_public(v1_file)
    return kr, verifier, old_pkg, new_pkg, v1_file


def test_verifier_trusting_v1_walks_to_v3(rotated):
    kr, verifier, old_pkg, new_pkg, _ = rotated
    assert tgsp.verify(new_pkg, verifier.trust_policy()).ok
    assert tgsp.verify(old_pkg, verifier.trust_policy()).ok


def test_packages_from_older_versions_verify_against_newer_trust(rotated, tmp_path):
    kr, _, old_pkg, _, _ = rotated
    latest = tmp_path / "rel-latest.json"
    latest.write_text(canonical.encode(kr.public_file("rel").to_dict()).decode())
    fresh = Keyring(tmp_path / "fresh")
    fresh.import_public(latest)
    assert fresh.list()[0].version == 3
    assert tgsp.verify(old_pkg, fresh.trust_policy()).ok


def _chain(kr):
    return copy.deepcopy(kr.public_file("rel").lineage.to_dict())


def test_skipped_version_breaks_the_chain(rotated):
    kr, *_ = rotated
    d = _chain(kr)
    del d["chain"][0]
    with pytest.raises(RotationError, match="skips from version 1 to 3"):
        L.Lineage.from_dict(d).walk()


@pytest.mark.parametrize("which", [0, 1, 2, 3])
def test_each_of_the_four_rotation_signatures_is_required(rotated, which):
    kr, *_ = rotated
    d = _chain(kr)
    del d["chain"][0]["signatures"][which]
    with pytest.raises(RotationError, match="exactly 4 signatures|invalid"):
        L.Lineage.from_dict(d).walk()


def test_forged_rotation_signature_breaks_the_chain(rotated):
    kr, *_ = rotated
    d = _chain(kr)
    sig = bytearray(canonical.b64d(d["chain"][1]["signatures"][0]["sig"]))
    sig[5] ^= 1
    d["chain"][1]["signatures"][0]["sig"] = canonical.b64e(bytes(sig))
    with pytest.raises(RotationError, match="version 3 is invalid"):
        L.Lineage.from_dict(d).walk()


def test_fork_against_trusted_chain_is_rejected(rotated, tmp_path):
    """Someone holding v1 makes a different v2: a verifier that already knows
    the real v2 must reject packages from the fork."""
    kr, verifier, _, _, _ = rotated
    real = tmp_path / "real.json"
    real.write_text(canonical.encode(kr.public_file("rel").to_dict()).decode())
    verifier.import_public(real)  # now trusts v1..v3
    v1 = kr.signer("rel", pp)  # current version is 3; get v1's private key:
    obj = kr._load_key("rel")
    v1_key = kr._unseal(obj, obj["versions"][0], pp)
    evil = tgsp.PrivateKey.generate("signing")
    fork_stmt = L.rotation_statement("rel", v1_key, evil, 2, datetime.now(timezone.utc))
    fork = L.Lineage(v1_key.public, (fork_stmt,))
    assert len(fork.walk()) == 2  # the fork is internally valid...
    pkg = tmp_path / "fork.tgsp"
    tgsp.build(make_adapter(tmp_path / "s2"), pkg, signers=[tgsp.Signer("rel", 2, evil, fork)])
    report = tgsp.verify(pkg, verifier.trust_policy())
    assert report.first_failure.name == "signatures" and "forks" in report.first_failure.detail


def test_revoked_before_signing_fails_after_signing_passes(tmp_path):
    kr = Keyring(tmp_path / "k")
    kr.generate("rel", "signing", pp)
    src = make_adapter(tmp_path / "src")
    t0 = datetime(2030, 1, 1, tzinfo=timezone.utc)
    early, late = tmp_path / "early.tgsp", tmp_path / "late.tgsp"
    tgsp.build(src, early, signers=[kr.signer("rel", pp)], now=lambda: t0)
    tgsp.build(src, late, signers=[kr.signer("rel", pp)], now=lambda: t0 + timedelta(days=2))
    kr.revoke("rel", "key leaked", pp, when=t0 + timedelta(days=1))
    ok = tgsp.verify(early, kr.trust_policy())
    assert ok.ok and any("revoked later" in n for n in ok.notes)
    bad = tgsp.verify(late, kr.trust_policy())
    assert bad.first_failure.name == "signatures" and "revoked" in bad.first_failure.detail
    with pytest.raises(tgsp.errors.KeyringError, match="revoked"):
        kr.signer("rel", pp)


def test_revocation_file_from_elsewhere_is_honoured(tmp_path):
    signer_kr, verifier = Keyring(tmp_path / "s"), Keyring(tmp_path / "v")
    pub = signer_kr.generate("rel", "signing", pp)
    pubfile = tmp_path / "rel.json"
    pubfile.write_text(canonical.encode(pub.to_dict()).decode())
    verifier.import_public(pubfile)
    pkg = tmp_path / "p.tgsp"
    tgsp.build(make_adapter(tmp_path / "src"), pkg, signers=[signer_kr.signer("rel", pp)])
    assert tgsp.verify(pkg, verifier.trust_policy()).ok
    rev = signer_kr.revoke("rel", "retired", pp, when=datetime(2000, 1, 1, tzinfo=timezone.utc))
    revfile = signer_kr.revocation_path(rev.keyid)
    report = tgsp.verify(pkg, verifier.trust_policy(revocation_files=[str(revfile)]))
    assert report.first_failure.name == "signatures"


def test_revocation_by_a_stranger_is_rejected(tmp_path):
    a, b = Keyring(tmp_path / "a"), Keyring(tmp_path / "b")
    target = a.generate("rel", "signing", pp)
    b.generate("mallory", "signing", pp)
    obj = b._load_key("mallory")
    mallory = b._unseal(obj, obj["versions"][0], pp)
    stmt = L.revocation_statement(target.keyid, "griefing", datetime.now(timezone.utc), mallory, L.Lineage(mallory.public))
    with pytest.raises(FormatError, match="outside the signer's lineage"):
        L.parse_revocation(stmt)
