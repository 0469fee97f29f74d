"""Building and signing: determinism, evidence, provenance, signing later."""

from __future__ import annotations

import io
import os
from datetime import datetime, timezone

import pytest

import tgsp
from tgsp import canonical, evidence, manifest as mf
from tgsp.errors import InputError, OutputError, SignatureError, UnsafeEntryError, UnsafeSourceError
from tgsp.keyring import Keyring
from tgsp.package import open_package

from tests.helpers import files_of, fixed, make_adapter, pp

T0 = fixed(2030, 5, 1, 12, 0, 0)


def test_same_inputs_give_the_same_bytes(world, tmp_path):
    a, b = tmp_path / "a.tgsp", tmp_path / "b.tgsp"
    for out in (a, b):
        tgsp.build(world.src, out, route="r", version=1, now=T0)
    assert a.read_bytes() == b.read_bytes()
    # Signed: Ed25519 is deterministic, ML-DSA-65 is randomised (FIPS 204 hedged).
    # Everything up to the envelope is identical.
    for out in (a, b):
        tgsp.build(world.src, out, route="r", version=1, now=T0, signers=[world.signer])
    with open_package(a) as pa, open_package(b) as pb:
        assert pa.package_id == pb.package_id
        cut = pa.entries[-1].header_offset
    assert a.read_bytes()[:cut] == b.read_bytes()[:cut]


def test_manifest_lists_plain_and_stored_digests(world):
    import hashlib

    with open_package(world.pkg) as pkg:
        m = pkg.manifest
        by_path = {f["path"]: f for f in m["files"]}
        w = (world.src / "adapter_model.safetensors").read_bytes()
        entry = by_path["adapter_model.safetensors"]
        assert entry["sha256"] == hashlib.sha256(w).hexdigest() and entry["size"] == len(w)
        stored = pkg.read(mf.PAYLOAD_PREFIX + "adapter_model.safetensors")
        assert entry["stored"]["sha256"] == hashlib.sha256(stored).hexdigest()
        assert w not in stored  # encrypted
        assert pkg.package_id == "sha256:" + hashlib.sha256(canonical.encode(m)).hexdigest()


def test_evidence_and_provenance(world, tmp_path):
    events = tmp_path / "events.jsonl"
    events.write_text('{"type": "ci.test", "time": "2025-12-31T00:00:00Z", "data": {"passed": 12, "loss": 0.125}}\n'
                      '\n{"type": "ci.scan"}\n')
    out = tmp_path / "e.tgsp"
    body = evidence.load_user_events(events, T0())
    tgsp.build(world.src, out, events=body, signers=[world.signer], now=T0)
    with open_package(out) as pkg:
        types = [e["type"] for e in pkg.evidence]
        assert types == ["ci.test", "ci.scan", "tgflow.build", "tgflow.sign"]  # chain order is time order
        assert pkg.evidence[0]["data"]["loss"] == 0.125
        assert pkg.evidence[0]["time"] == "2025-12-31T00:00:00Z"
        times = [e["time"] for e in pkg.evidence]
        assert times == sorted(times)
        prov = pkg.provenance
    assert prov["_type"] == "https://in-toto.io/Statement/v1"
    assert prov["predicateType"] == "https://slsa.dev/provenance/v1"
    assert {s["name"] for s in prov["subject"]} == set(files_of(world.src))


@pytest.mark.parametrize("line,msg", [
    ("not json", "not valid JSON"),
    ('{"data": 1}', "needs a \\\"type\\\""),
    ('{"type": "x", "extra": 1}', "unknown field"),
    ('{"type": "x", "data": NaN}', "non-finite number NaN"),
    ("[" * 5000 + "]" * 5000, "nests deeper than 64"),
    ('{"type": "x", "time": "yesterday"}', "ISO 8601"),
])
def test_bad_evidence_lines_name_the_line(tmp_path, line, msg):
    f = tmp_path / "ev.jsonl"
    f.write_text('{"type": "ok"}\n' + line + "\n")
    with pytest.raises(InputError, match=f"ev.jsonl:2: .*{msg}"):
        evidence.load_user_events(f, T0())


def test_sign_later_then_verify(world, tmp_path):
    out = tmp_path / "later.tgsp"
    tgsp.build(world.src, out, recipients=[world.kr.public_file("ops").key], now=T0)
    assert tgsp.verify(out, world.policy()).first_failure.name == "signatures"
    res = tgsp.sign(out, world.signer)
    report = tgsp.verify(out, world.policy())
    assert report.ok and report.package_id == res.package_id
    with open_package(out) as pkg:
        assert [e["type"] for e in pkg.evidence] == ["tgflow.build", "tgflow.sign"]  # (no events given)
    # And it still decrypts to the original.
    dest = tmp_path / "o"
    tgsp.unpack(out, dest, world.policy(), identities=world.kr.identities("ops", pp))
    assert files_of(dest) == files_of(world.src)


def test_resign_with_same_key_replaces_its_signature(world, tmp_path):
    out = tmp_path / "p.tgsp"
    out.write_bytes(world.bytes)
    before = tgsp.open_package(out)
    old_sigs = before.envelope.sig_map()
    pid = before.package_id
    before.close()
    res = tgsp.sign(out, world.signer)
    assert res.package_id == pid  # manifest unchanged
    with open_package(out) as after:
        assert len(after.envelope.signatures) == 2
        assert after.envelope.sig_map() != old_sigs  # ML-DSA is randomised
    assert tgsp.verify(out, world.policy()).ok


def test_new_signer_on_signed_package_is_refused(world, tmp_path):
    out = tmp_path / "p.tgsp"
    out.write_bytes(world.bytes)
    with pytest.raises(SignatureError, match="already signed by alice"):
        tgsp.sign(out, world.kr.signer("bob", pp))
    assert out.read_bytes() == world.bytes


def test_two_signers_at_build(world, tmp_path):
    out = tmp_path / "two.tgsp"
    tgsp.build(world.src, out, signers=[world.signer, world.kr.signer("bob", pp)])
    report = tgsp.verify(out, world.policy(trusted=["bob"]))
    assert report.ok and any("alice" in n and "not trusted" in n for n in report.notes)
    with open_package(out) as pkg:
        assert len(pkg.envelope.signatures) == 4


def test_sign_refuses_a_damaged_package(world, tmp_path):
    out = tmp_path / "p.tgsp"
    data = bytearray(world.bytes)
    data[700] ^= 1
    out.write_bytes(bytes(data))
    with pytest.raises(tgsp.errors.PackageError):
        tgsp.sign(out, world.signer)
    assert out.read_bytes() == bytes(data)


def test_unknown_manifest_fields_survive_signing(world, tmp_path):
    out = tmp_path / "x.tgsp"
    tgsp.build(world.src, out, extra={"x-org": {"ticket": "OPS-1"}}, now=T0)
    tgsp.sign(out, world.signer)
    with open_package(out) as pkg:
        assert pkg.manifest["x-org"] == {"ticket": "OPS-1"}
    assert tgsp.verify(out, world.policy()).ok


def test_unknown_critical_field_is_rejected(world, tmp_path, monkeypatch):
    """A newer writer marks an extension critical; this reader must refuse it."""
    out = tmp_path / "c.tgsp"
    with pytest.raises(tgsp.errors.FormatError, match="does not understand"):
        tgsp.build(world.src, out, extra={"critical": ["x-new-thing"], "x-new-thing": 1})
    monkeypatch.setattr(mf, "KNOWN", mf.KNOWN | {"x-new-thing"})  # the newer writer
    tgsp.build(world.src, out, extra={"critical": ["x-new-thing"], "x-new-thing": 1}, signers=[world.signer])
    monkeypatch.undo()
    report = tgsp.verify(out, world.policy())
    assert report.first_failure.name == "format" and "x-new-thing" in report.first_failure.detail


def test_source_with_symlink_is_refused(tmp_path):
    src = make_adapter(tmp_path / "src")
    os.symlink("/etc/hostname", src / "link")
    with pytest.raises(UnsafeSourceError, match="symbolic link"):
        tgsp.build(src, tmp_path / "o.tgsp")
    assert not (tmp_path / "o.tgsp").exists()


def test_case_collision_is_refused(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    (src / "Model.bin").write_bytes(b"a")
    (src / "model.bin").write_bytes(b"b")
    with pytest.raises(UnsafeSourceError, match="differ only in case"):
        tgsp.build(src, tmp_path / "o.tgsp")


def test_failed_build_leaves_no_partial_output_and_keeps_old_file(world, tmp_path, monkeypatch):
    out = tmp_path / "keep.tgsp"
    out.write_bytes(b"previous package")
    from tgsp import builder

    def boom(*a, **k):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(builder, "_finish", boom)
    with pytest.raises(OutputError, match="No space left"):
        tgsp.build(world.src, out)
    assert out.read_bytes() == b"previous package"
    assert [p.name for p in tmp_path.iterdir()] == ["keep.tgsp"]


def test_missing_source_and_missing_output_folder(tmp_path, world):
    with pytest.raises(tgsp.errors.NotFoundError):
        tgsp.build(tmp_path / "nope", tmp_path / "o.tgsp")
    # One rule for every command: a missing output folder is created.
    res = tgsp.build(world.src, tmp_path / "no" / "such" / "o.tgsp")
    assert res.path.is_file() and tgsp.open_package(res.path, check_digests=True).close() is None


def test_evidence_dated_after_the_build_or_out_of_order_is_refused(world, tmp_path):
    for text in ('{"type": "ci.late", "time": "2099-01-01T00:00:00Z"}\n',
                 '{"type": "a", "time": "2025-06-01T00:00:00Z"}\n{"type": "b", "time": "2025-01-01T00:00:00Z"}\n'):
        events = tmp_path / "ev.jsonl"
        events.write_text(text)
        with pytest.raises(InputError, match="must be in time order and not after the build"):
            tgsp.build(world.src, tmp_path / "x.tgsp", events=evidence.load_user_events(events, T0()), now=T0)
        assert not (tmp_path / "x.tgsp").exists()
