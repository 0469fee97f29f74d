"""Issue 10, item 3: trust edges. Real keys, real packages, the real CLI."""

from __future__ import annotations

import json
import os
from datetime import datetime, timedelta, timezone

import pytest

import tgsp
from tgsp import canonical, evidence, lineage as L
from tgsp.errors import FormatError, KeyringError, RevokedError, RotationError
from tgsp.keyring import Keyring
from tgsp.verify import load_rollback_state
from tgflow_cli.main import main

from tests.helpers import PASS, make_adapter, pp

T0 = datetime(2020, 1, 1, tzinfo=timezone.utc)


def _run(capsys, *argv):
    code = main([str(a) for a in argv])
    o, e = capsys.readouterr()
    return code, o, e


def _pubfile(kr, name, path):
    path.write_text(json.dumps(kr.public_file(name).to_dict()))
    return path


@pytest.fixture
def stolen(tmp_path):
    """v1 stolen; the owner rotated to v2 and revoked v1; the thief forks v2'
    dated before the revocation and signs a package with it today."""
    owner = Keyring(tmp_path / "owner", now=lambda: T0)
    owner.generate("rel", "signing", pp)
    v1_file = _pubfile(owner, "rel", tmp_path / "rel-v1.json")
    obj = owner._load_key("rel")
    v1_key = owner._unseal(obj, obj["versions"][0], pp)
    owner.now = lambda: T0 + timedelta(days=1)
    owner.rotate("rel", pp)
    owner.now = lambda: T0 + timedelta(days=2)
    rev = owner.revoke(owner.public_file("rel").lineage.walk()[0].key.keyid, "v1 stolen", pp)
    evil = tgsp.PrivateKey.generate("signing")
    fork = L.Lineage(v1_key.public, (L.rotation_statement("rel", v1_key, evil, 2, T0 + timedelta(hours=12)),))
    src = make_adapter(tmp_path / "src")
    forged = tmp_path / "forged.tgsp"
    tgsp.build(src, forged, signers=[tgsp.Signer("rel", 2, evil, fork)])
    real = tmp_path / "real.tgsp"
    tgsp.build(src, real, signers=[owner.signer("rel", pp)])
    fork_file = tmp_path / "fork.pub.json"
    fork_file.write_text(json.dumps(L.PublicKeyFile("rel", "signing", 2, L.clock.fmt(T0), evil.public, fork).to_dict()))
    return owner, v1_file, owner.revocation_path(rev.keyid), forged, real, fork_file, tmp_path


def test_fork_after_revocation_is_refused_by_a_verifier_that_knew_only_v1(stolen):
    owner, v1_file, rev_file, forged, real, _, tmp = stolen
    verifier = Keyring(tmp / "v1-only")
    verifier.import_public(v1_file)
    policy = verifier.trust_policy(revocation_files=[str(rev_file)])
    bad = tgsp.verify(forged, policy)
    assert bad.first_failure.name == "signatures" and "forks" in bad.first_failure.detail
    # Without the revocation's chain knowledge, the revoked-rotation rule alone refuses it.
    bare = tgsp.verify(forged, verifier.trust_policy(revocation_files=[]))
    assert bare.ok  # (nothing says v1 was revoked: this verifier cannot know)
    rev = L.parse_revocation(json.loads(rev_file.read_text()))
    stripped = tgsp.verify(forged, tgsp.signing.TrustPolicy(
        trusted=verifier.trusted(), revocations=[L.Revocation(rev.keyid, rev.revoked_at, rev.reason, rev.root_keyid)]))
    assert "was not trusted before" in stripped.first_failure.detail


def test_fork_is_refused_against_the_owners_chain_and_on_import_under_any_name(stolen, capsys, monkeypatch):
    owner, v1_file, rev_file, forged, real, fork_file, tmp = stolen
    assert tgsp.verify(real, owner.trust_policy()).ok
    assert "forks" in tgsp.verify(forged, owner.trust_policy()).first_failure.detail
    with pytest.raises(RotationError, match="forks from a trusted one at version 2"):
        owner.import_public(fork_file, "other")
    monkeypatch.setenv("TGFLOW_HOME", str(tmp / "owner"))
    code, _, err = _run(capsys, "key", "import", fork_file, "--name", "other")
    assert code == 1 and "forks" in err and not (tmp / "owner" / "trust" / "other.json").exists()
    # A keyring that knew only v1 and has the revocation refuses the fork too.
    verifier = Keyring(tmp / "v1-only")
    verifier.import_public(v1_file)
    (verifier.home / "revocations").mkdir(parents=True, exist_ok=True)
    (verifier.home / "revocations" / rev_file.name).write_text(rev_file.read_text())
    with pytest.raises((RotationError, RevokedError)):
        verifier.import_public(fork_file, "other")


def test_owner_revokes_the_forked_branch(stolen, capsys, monkeypatch):
    owner, v1_file, rev_file, forged, real, fork_file, tmp = stolen
    monkeypatch.setenv("TGFLOW_HOME", str(tmp / "owner"))
    monkeypatch.setenv("TGFLOW_PASSPHRASE", PASS)
    code, o, _ = _run(capsys, "key", "revoke", "rel", "--fork", forged, "--reason", "thief's branch",
                      "--at", L.clock.fmt(T0 + timedelta(hours=1)), "--json")  # from the theft on
    assert code == 0
    rev = L.parse_revocation(json.loads((tmp / "owner" / "revocations" / f"{json.loads(o)['keyid']}.json").read_text()))
    assert rev.keyid == json.loads(fork_file.read_text())["keyid"]
    # A verifier that only knows v1 and never saw the v1 revocation still refuses the branch now.
    verifier = Keyring(tmp / "v1-only")
    verifier.import_public(v1_file)
    report = tgsp.verify(forged, verifier.trust_policy(revocation_files=[str(owner.revocation_path(rev.keyid))]))
    assert report.first_failure.name == "signatures" and "revoked" in report.first_failure.detail


def test_bare_name_never_means_a_file_in_the_working_folder(tmp_path, capsys, monkeypatch):
    mallory = Keyring(tmp_path / "mallory")
    mallory.generate("ci", "signing", pp)
    pkg = tmp_path / "evil.tgsp"
    tgsp.build(make_adapter(tmp_path / "src"), pkg, signers=[mallory.signer("ci", pp)])
    monkeypatch.chdir(tmp_path)
    _pubfile(mallory, "ci", tmp_path / "ci")  # the planted ./ci
    mallory.generate("operator", "recipient", pp)
    _pubfile(mallory, "operator", tmp_path / "operator")
    monkeypatch.setenv("TGFLOW_HOME", str(tmp_path / "victim"))
    monkeypatch.setenv("TGFLOW_PASSPHRASE", PASS)
    code, _, err = _run(capsys, "tgsp", "verify", pkg, "--trusted", "ci")
    assert code == 3 and "no key named 'ci'" in err
    assert _run(capsys, "key", "generate", "rel")[0] == 0
    code, _, err = _run(capsys, "tgsp", "build", tmp_path / "src", "-o", tmp_path / "o.tgsp", "--recipient", "operator")
    assert code == 3 and not (tmp_path / "o.tgsp").exists()
    assert _run(capsys, "tgsp", "verify", pkg, "--trusted", "./ci")[0] == 0  # a path says it is a path
    code, _, err = _run(capsys, "tgsp", "verify", pkg, "--trusted", "./missing.json")
    assert code == 2 and "does not exist" in err


def test_state_file_refuses_another_route_or_kind_unless_named(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("TGFLOW_HOME", str(tmp_path / "h"))
    monkeypatch.setenv("TGFLOW_PASSPHRASE", PASS)
    _run(capsys, "key", "generate", "rel")
    src = make_adapter(tmp_path / "src")
    for name, route, kind, version in (("a", "support", "adapter", 3), ("old", "billing", "adapter", 9),
                                       ("data", "support", "data", 4)):
        assert _run(capsys, "tgsp", "build", src, "-o", tmp_path / f"{name}.tgsp", "--route", route, "--kind", kind,
                    "--version", version, "--sign", "rel")[0] == 0
    state = tmp_path / "state.json"
    assert _run(capsys, "tgsp", "verify", tmp_path / "a.tgsp", "--state", state)[0] == 0
    code, _, err = _run(capsys, "tgsp", "verify", tmp_path / "old.tgsp", "--state", state)
    assert code == 1 and "not one this state file tracks" in err and "billing" not in state.read_text()
    code, _, err = _run(capsys, "tgsp", "verify", tmp_path / "data.tgsp", "--state", state)
    assert code == 1 and "kind 'adapter'" in err
    assert _run(capsys, "tgsp", "verify", tmp_path / "old.tgsp", "--state", state, "--route", "billing")[0] == 0
    code, _, err = _run(capsys, "tgsp", "verify", tmp_path / "a.tgsp", "--route", "billing")
    assert code == 1 and "not the expected 'billing'" in err
    code, _, err = _run(capsys, "tgsp", "unpack", tmp_path / "a.tgsp", "-o", tmp_path / "u", "--kind", "data")
    assert code == 1 and not (tmp_path / "u").exists()


def test_provenance_subject_must_match_the_manifest(world, tmp_path, monkeypatch):
    real = evidence.provenance_statement

    def lying(files, **kw):
        st = real(files, **kw)
        st["subject"][0]["digest"]["sha256"] = "0" * 64
        return st

    monkeypatch.setattr(evidence, "provenance_statement", lying)
    pkg = tmp_path / "p.tgsp"
    tgsp.build(world.src, pkg, signers=[world.signer])
    report = tgsp.verify(pkg, world.policy())
    assert report.first_failure.name == "evidence" and "provenance subjects" in report.first_failure.detail


def test_edited_stored_key_id_cannot_dodge_a_revocation(tmp_path):
    kr = Keyring(tmp_path / "k")
    kr.generate("rel", "signing", pp)
    kr.revoke("rel", "leaked", pp)
    path = kr.home / "keys" / "rel.json"
    obj = json.loads(path.read_text())
    obj["versions"][0]["keyid"] = "f" * 64
    path.write_text(json.dumps(obj))
    with pytest.raises(KeyringError, match="was altered"):
        kr.signer("rel", pp)


def test_json_true_is_not_an_integer(world, tmp_path):
    pub = world.kr.public_file("alice").to_dict()
    pub["version"] = True
    with pytest.raises(FormatError, match="version"):
        L.PublicKeyFile.from_dict(pub)
    with tgsp.open_package(world.pkg) as pkg:
        m = json.loads(json.dumps(pkg.manifest))
    m["signers"][0]["version"] = True
    with pytest.raises(FormatError, match="version"):
        tgsp.manifest.validate(m)
    state = tmp_path / "state.json"
    state.write_text(json.dumps({"format": "tgflow-rollback-state/1", "routes": {"support": {"version": True, "package_id": "x"}}}))
    with pytest.raises(tgsp.errors.InputError, match="malformed"):
        load_rollback_state(state)


def test_expiry_in_the_past_is_refused(world, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("TGFLOW_HOME", str(world.kr.home))
    code, _, err = _run(capsys, "tgsp", "build", world.src, "-o", tmp_path / "x.tgsp", "--expires", "2001-01-01T00:00:00Z")
    assert code == 2 and "not in the future" in err and not (tmp_path / "x.tgsp").exists()


def test_audit_log_truncation_is_detected_and_blocks_key_changes(tmp_path, capsys, monkeypatch):
    kr = Keyring(tmp_path / "k")
    kr.generate("rel", "signing", pp)
    kr.rotate("rel", pp)
    kr.generate("ops", "recipient", pp)
    log = kr.home / "audit.jsonl"
    lines = log.read_bytes().splitlines(keepends=True)
    log.write_bytes(b"".join(lines[:-1]))  # the tail cut off: still a valid chain
    _, brk, _ = kr.audit()
    assert brk is not None and "truncated" in brk.reason
    before = (kr.home / "keys" / "rel.json").read_bytes()
    with pytest.raises(KeyringError, match="audit log is broken"):
        kr.rotate("rel", pp)
    assert (kr.home / "keys" / "rel.json").read_bytes() == before  # nothing changed, a retry cannot rotate twice
    monkeypatch.setenv("TGFLOW_HOME", str(kr.home))
    code, _, err = _run(capsys, "key", "audit")
    assert code == 1 and "truncated" in err


def test_a_signature_dated_before_its_key_version_existed_is_refused(tmp_path):
    kr = Keyring(tmp_path / "k", now=lambda: T0 + timedelta(days=30))
    kr.generate("rel", "signing", pp)
    kr.rotate("rel", pp)  # version 2 made at T0 + 30 days
    pkg = tmp_path / "p.tgsp"
    tgsp.build(make_adapter(tmp_path / "src"), pkg, signers=[kr.signer("rel", pp)], now=lambda: T0)
    report = tgsp.verify(pkg, kr.trust_policy())
    assert report.first_failure.name == "signatures" and "before its key version 2 existed" in report.first_failure.detail


def test_revoking_a_forked_key_by_its_id_says_how(stolen, capsys, monkeypatch):
    """The fork's key is not an own key: the refusal names --fork, the way that works (issue 26)."""
    owner, v1_file, rev_file, forged, real, fork_file, tmp = stolen
    monkeypatch.setenv("TGFLOW_HOME", str(tmp / "owner"))
    monkeypatch.setenv("TGFLOW_PASSPHRASE", PASS)
    code, _, err = _run(capsys, "key", "revoke", json.loads(fork_file.read_text())["keyid"], "--reason", "thief")
    assert code == 3 and "key revoke NAME --fork FILE" in err
    code, _, _ = _run(capsys, "key", "revoke", "rel", "--fork", fork_file, "--reason", "thief", "--json")
    assert code == 0  # by its public key file too, not only by its package
