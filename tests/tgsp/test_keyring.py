"""The keyring: sealing, passphrase sources, import rules, audit log."""

from __future__ import annotations

import json

import pytest

from tgsp import canonical
from tgsp.errors import InputError, KeyExistsError, KeyNotFoundError, KeyringError, PassphraseRequiredError, WrongPassphraseError
from tgsp.keyring import Keyring, passphrase_from_env

from tests.helpers import pp


def test_private_parts_are_sealed_on_disk(tmp_path):
    kr = Keyring(tmp_path / "h")
    kr.generate("k", "signing", pp)
    raw = (tmp_path / "h" / "keys" / "k.json").read_text()
    key = kr.signer("k", pp).key
    for seed in key.seeds.values():
        assert canonical.b64e(seed) not in raw and seed.hex() not in raw
    assert oct((tmp_path / "h" / "keys" / "k.json").stat().st_mode & 0o777) == "0o600"
    blob = json.loads(raw)["versions"][0]["sealed"]
    assert blob["kdf"]["alg"] == "argon2id" and blob["kdf"]["memory_cost"] >= 65536


def test_wrong_passphrase_and_tampered_key_file_give_the_same_error(tmp_path):
    kr = Keyring(tmp_path / "h")
    kr.generate("k", "signing", pp)
    with pytest.raises(WrongPassphraseError):
        kr.signer("k", lambda: "nope")
    path = tmp_path / "h" / "keys" / "k.json"
    obj = json.loads(path.read_text())
    ct = bytearray(canonical.b64d(obj["versions"][0]["sealed"]["ciphertext"]))
    ct[3] ^= 1
    obj["versions"][0]["sealed"]["ciphertext"] = canonical.b64e(bytes(ct))
    path.write_text(json.dumps(obj))
    with pytest.raises(WrongPassphraseError):
        kr.signer("k", pp)


def test_absurd_kdf_parameters_are_refused(tmp_path):
    kr = Keyring(tmp_path / "h")
    kr.generate("k", "recipient", pp)
    path = tmp_path / "h" / "keys" / "k.json"
    obj = json.loads(path.read_text())
    obj["versions"][0]["sealed"]["kdf"]["memory_cost"] = 1 << 30
    path.write_text(json.dumps(obj))
    with pytest.raises(Exception, match="out-of-range memory_cost"):
        kr.identities("k", pp)


def test_passphrase_sources_in_order(tmp_path):
    f = tmp_path / "pp"
    f.write_text("from-file\n")
    g = tmp_path / "pp2"
    g.write_text("from-env-file")
    assert passphrase_from_env(str(f), {"TGFLOW_PASSPHRASE": "env"}) == "from-file"
    assert passphrase_from_env(None, {"TGFLOW_PASSPHRASE": "env", "TGFLOW_PASSPHRASE_FILE": str(g)}) == "env"
    assert passphrase_from_env(None, {"TGFLOW_PASSPHRASE_FILE": str(g)}) == "from-env-file"
    assert passphrase_from_env(None, {}) is None
    with pytest.raises(PassphraseRequiredError, match="does not exist"):
        passphrase_from_env(str(tmp_path / "missing"), {})
    (tmp_path / "empty").write_text("\n")
    with pytest.raises(PassphraseRequiredError, match="empty"):
        passphrase_from_env(str(tmp_path / "empty"), {})


def test_names_duplicates_and_kinds(tmp_path):
    kr = Keyring(tmp_path / "h")
    with pytest.raises(InputError, match="not allowed"):
        kr.generate("../evil", "signing", pp)
    kr.generate("k", "recipient", pp)
    with pytest.raises(KeyExistsError):
        kr.generate("k", "signing", pp)
    with pytest.raises(KeyringError, match="recipient key"):
        kr.signer("k", pp)
    with pytest.raises(KeyNotFoundError):
        kr.signer("nope", pp)
    with pytest.raises(KeyringError, match="only signing keys"):
        kr.revoke("k", "x", pp)


def test_import_refuses_a_different_key_under_a_trusted_name(tmp_path):
    a, b, v = Keyring(tmp_path / "a"), Keyring(tmp_path / "b"), Keyring(tmp_path / "v")
    fa, fb = tmp_path / "a.json", tmp_path / "b.json"
    fa.write_text(json.dumps(a.generate("rel", "signing", pp).to_dict()))
    fb.write_text(json.dumps(b.generate("rel", "signing", pp).to_dict()))
    v.import_public(fa)
    with pytest.raises(KeyExistsError, match="different key"):
        v.import_public(fb)
    assert v.import_public(fb, name="rel-b").name == "rel-b"


def test_import_of_rotated_key_extends_trust(tmp_path):
    a, v = Keyring(tmp_path / "a"), Keyring(tmp_path / "v")
    f = tmp_path / "rel.json"
    f.write_text(json.dumps(a.generate("rel", "signing", pp).to_dict()))
    v.import_public(f)
    a.rotate("rel", pp)
    f.write_text(json.dumps(a.public_file("rel").to_dict()))
    assert v.import_public(f).version == 2
    assert v.show("rel")["versions"][1]["version"] == 2


def test_import_of_tampered_public_file_is_refused(tmp_path):
    a, v = Keyring(tmp_path / "a"), Keyring(tmp_path / "v")
    d = a.generate("rel", "signing", pp).to_dict()
    d["keyid"] = "0" * 64
    f = tmp_path / "rel.json"
    f.write_text(json.dumps(d))
    with pytest.raises(InputError, match="keyid does not match"):
        v.import_public(f)


def test_audit_log_records_every_operation_and_detects_tampering(tmp_path):
    kr = Keyring(tmp_path / "h")
    kr.generate("s", "signing", pp)
    kr.generate("r", "recipient", pp)
    kr.rotate("s", pp)
    kr.revoke("s", "retired", pp)
    records, brk, head = kr.audit()
    assert brk is None and [r["op"] for r in records] == ["generate", "generate", "rotate", "revoke"]
    log = tmp_path / "h" / "audit.jsonl"
    lines = log.read_bytes().splitlines()
    lines[1] = lines[1].replace(b'"recipient"', b'"signing"')
    log.write_bytes(b"\n".join(lines) + b"\n")
    _, brk, _ = kr.audit()
    assert brk is not None and brk.index == 2  # record 1 was edited: the link from 2 breaks
    with pytest.raises(KeyringError, match="audit log is broken"):
        kr.generate("t", "signing", pp)
