"""Tamper resistance, as properties: every modification is rejected."""

from __future__ import annotations

import io
import json
from datetime import datetime, timezone

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

import tgsp
from tgsp import archive, canonical, dsse, manifest as mf
from tgsp.package import open_package

from tests.helpers import assemble, fixed, make_adapter, pp

SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def verify_bytes(world, data: bytes, **policy):
    return tgsp.verify(io.BytesIO(data), world.policy(**policy))


def entries_of(data: bytes) -> list[tuple[str, bytes]]:
    f = io.BytesIO(data)
    return [(e.name, archive.read_entry(f, e)) for e in archive.index(f, max_entries=100, max_entry_size=1 << 30, file_size=len(data))]


def test_untouched_package_verifies(world):
    report = verify_bytes(world, world.bytes)
    assert report.ok, report.to_dict()
    assert [c.name for c in report.checks] == list(tgsp.CHECKS)


@SETTINGS
@given(st.data())
def test_any_single_changed_byte_is_rejected(world, data):
    pos = data.draw(st.integers(0, len(world.bytes) - 1), label="position")
    delta = data.draw(st.integers(1, 255), label="xor")
    bad = bytearray(world.bytes)
    bad[pos] ^= delta
    report = verify_bytes(world, bytes(bad))
    assert not report.ok
    assert report.first_failure is not None and report.first_failure.detail


@SETTINGS
@given(st.integers(min_value=1))
def test_truncation_is_rejected(world, cut):
    cut = cut % len(world.bytes) or 1
    report = verify_bytes(world, world.bytes[:-cut])
    assert not report.ok and report.first_failure.name == "format"


@SETTINGS
@given(st.binary(min_size=1, max_size=2048))
def test_appended_bytes_are_rejected(world, tail):
    report = verify_bytes(world, world.bytes + tail)
    assert not report.ok and report.first_failure.name == "format"


@SETTINGS
@given(st.data())
def test_reordered_entries_are_rejected(world, data):
    entries = entries_of(world.bytes)
    perm = data.draw(st.permutations(range(len(entries) - 1)))
    if list(perm) == sorted(perm):
        perm = list(reversed(perm))
    shuffled = [entries[i] for i in perm] + [entries[-1]]
    report = verify_bytes(world, assemble(shuffled))
    assert not report.ok and report.first_failure.name == "entries"


@pytest.mark.parametrize("mutation", ["duplicate", "extra", "missing", "extra-after-envelope"])
def test_duplicated_extra_or_missing_entries_are_rejected(world, mutation):
    entries = entries_of(world.bytes)
    if mutation == "duplicate":
        entries.insert(1, entries[0])
    elif mutation == "extra":
        entries.insert(-1, ("payload/smuggled.bin", b"not listed"))
    elif mutation == "missing":
        del entries[0]
    else:
        entries.append(("zzz", b"x"))
    report = verify_bytes(world, assemble(entries))
    assert not report.ok
    assert report.first_failure.name in ("format", "entries")


def _rewrite_envelope(world, edit) -> bytes:
    entries = entries_of(world.bytes)
    env = json.loads(entries[-1][1])
    edit(env)
    entries[-1] = (mf.ENVELOPE_ENTRY, canonical.encode(env))
    return assemble(entries)


@pytest.mark.parametrize("alg", ["ed25519", "ml-dsa-65"])
def test_stripping_either_signature_is_rejected(world, alg):
    from tgsp.keys import component_keyid

    drop = component_keyid(alg, world.signer.key.public.public[alg])
    bad = _rewrite_envelope(world, lambda env: env.__setitem__(
        "signatures", [s for s in env["signatures"] if s["keyid"] != drop]))
    report = verify_bytes(world, bad)
    assert report.first_failure.name == "signatures"
    assert f"missing {alg} signature" in report.first_failure.detail


def test_extra_unnamed_signature_is_rejected(world):
    bob = world.kr.signer("bob", pp)
    def add(env):
        payload = canonical.b64d(env["payload"])
        for kid, sig in bob.key.sign_hybrid(dsse.MANIFEST_TYPE, payload):
            env["signatures"].append({"keyid": kid, "sig": canonical.b64e(sig)})
    report = verify_bytes(world, _rewrite_envelope(world, add))
    assert report.first_failure.name == "signatures"
    assert "does not name" in report.first_failure.detail


def test_signature_from_untrusted_key_is_rejected(world):
    report = verify_bytes(world, world.bytes, trusted=["bob"])
    assert report.first_failure.name == "signatures"
    assert "no trusted signer" in report.first_failure.detail


def test_manifest_swapped_under_valid_signatures_is_rejected(world, tmp_path):
    """Re-signing a different manifest with a key the verifier does not trust."""
    from tgsp.keyring import Keyring

    mallory = Keyring(tmp_path / "m")
    mallory.generate("alice", "signing", pp)  # same *name*, different key
    other = tmp_path / "other.tgsp"
    tgsp.build(world.src, other, route="support", version=99, signers=[mallory.signer("alice", pp)])
    report = tgsp.verify(other, world.policy())
    assert report.first_failure.name == "signatures"


def test_expired_package_is_rejected(world):
    report = verify_bytes(world, world.bytes, now=fixed(2099, 1, 1))
    assert report.first_failure.name == "expiry"
    assert verify_bytes(world, world.bytes, now=fixed(2098, 12, 31)).ok


@pytest.mark.parametrize("floor,ok", [(2, True), (3, True), (4, False)])
def test_rollback_floor(world, floor, ok):
    report = verify_bytes(world, world.bytes, min_version=floor)
    assert report.ok is ok
    if not ok:
        assert report.first_failure.name == "rollback"


def test_rollback_state_rejects_equivocation(world):
    state = {"format": "tgflow-rollback-state/1", "routes": {"support": {"version": 3, "package_id": "sha256:" + "0" * 64}}}
    report = verify_bytes(world, world.bytes, rollback_state=state)
    assert report.first_failure.name == "rollback"
    assert "different content" in report.first_failure.detail


def test_unsigned_package_is_rejected(world, tmp_path):
    out = tmp_path / "u.tgsp"
    tgsp.build(world.src, out)
    report = tgsp.verify(out, world.policy())
    assert report.first_failure.name == "signatures" and "not signed" in report.first_failure.detail


def test_evidence_tampering_is_caught_even_with_fixed_digests(world):
    """Rewrite an evidence event and fix its digest in a manifest we cannot re-sign."""
    with open_package(world.pkg) as pkg:
        m = dict(pkg.manifest)
    entries = entries_of(world.bytes)
    ev = dict(entries)[mf.EVIDENCE_ENTRY].replace(b"tgflow.build", b"tgflow.bu1ld")
    entries = [(n, ev if n == mf.EVIDENCE_ENTRY else d) for n, d in entries]
    report = verify_bytes(world, assemble(entries))
    assert not report.ok and report.first_failure.name in ("digests", "evidence")


@pytest.mark.parametrize("data,words", [
    (b'{"a": "\xff\xfe"}', "unreadable at byte 7: not UTF-8 text"),
    (b'{"a": 1,,}', "unreadable at byte 8: not valid JSON (Expecting property name enclosed in double quotes)"),
])
def test_corruption_is_reported_in_the_reader_s_words(data, words):
    """'envelope is not valid JSON: 'utf-8' codec can't decode byte 0x94' was a Python message (issue 30)."""
    with pytest.raises(tgsp.errors.FormatError) as exc:
        canonical.parse(data, what="envelope")
    assert str(exc.value) == f"envelope is {words}" and "codec" not in str(exc.value)


def test_a_corrupted_package_says_so(world):
    data = bytearray(world.pkg.read_bytes())
    data[len(data) // 3] ^= 0x01  # inside the payload (the adapter weights): its digest no longer matches
    with pytest.raises(tgsp.errors.VerificationFailed) as exc:
        tgsp.verify(io.BytesIO(bytes(data)), world.policy()).raise_for_failure()
    assert str(exc.value).startswith("package is corrupted")
