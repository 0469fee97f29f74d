"""Issue 14: signing keys in a real SoftHSM2 token, through the real CLI."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from hypothesis import given, strategies as st

import tgsp
from tgsp import dsse, pkcs11 as P
from tgsp.errors import InputError
from tgsp.keyring import Keyring
from tgflow_cli.main import main

from tests.helpers import PASS, make_adapter, pp, tgflow_exe
from tests.keys.conftest import USER_PIN, init_token

def run(capsys, monkeypatch, home, *argv):
    monkeypatch.setenv("TGFLOW_HOME", str(home))
    monkeypatch.setenv("TGFLOW_PASSPHRASE", PASS)
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def _session(token):
    """The test's own session, straight through python-pkcs11."""
    import pkcs11

    tok = pkcs11.lib(token["module"]).get_token(token_label=token["label"])
    try:
        return tok.open(user_pin=USER_PIN, rw=True)
    except pkcs11.exceptions.UserAlreadyLoggedIn:  # tgflow's session in this process logged in already
        return tok.open(rw=True)


def test_token_key_signs_a_package_that_verifies_and_cryptography_agrees(token, tmp_path, capsys, monkeypatch):
    import pkcs11
    from cryptography.hazmat.primitives.asymmetric import ed25519

    home = tmp_path / "home"
    assert run(capsys, monkeypatch, home, "key", "generate", "rel", "--pkcs11", token["uri"])[0] == 0
    pkg = tmp_path / "p.tgsp"
    assert run(capsys, monkeypatch, home, "tgsp", "build", make_adapter(tmp_path / "src"), "-o", pkg, "--sign", "rel")[0] == 0
    code, out, _ = run(capsys, monkeypatch, home, "tgsp", "verify", pkg, "--require-hardware", "ed25519", "--json")
    assert code == 0 and json.loads(out)["ok"]
    with _session(token) as s:  # the public key, read out of the token itself
        pub = next(s.get_objects({pkcs11.Attribute.CLASS: pkcs11.ObjectClass.PUBLIC_KEY,
                                  pkcs11.Attribute.ID: token["id"]}))
        raw = pub[pkcs11.Attribute.EC_POINT][2:]
    with tgsp.open_package(pkg) as opened:
        env, m = opened.envelope, opened.manifest
    assert m["custody"][m["signers"][0]["keyid"]] == {"ed25519": "pkcs11", "ml-dsa-65": "software"}
    ed_id = tgsp.PublicKey.from_dict({"kind": "signing", "public": m["signers"][0]["public"]}).component_ids()["ed25519"]
    ed25519.Ed25519PublicKey.from_public_bytes(raw).verify(env.sig_map()[ed_id], dsse.pae(env.payload_type, env.payload))
    events = [json.loads(line) for line in (home / "audit.jsonl").read_text().splitlines()]
    assert events[0]["op"] == "generate" and events[0]["detail"]["custody"]["ed25519"] == "pkcs11"


def test_the_private_key_is_not_extractable(token, tmp_path):
    import pkcs11
    from pkcs11 import Attribute

    Keyring(tmp_path / "home").generate("rel", "signing", pp, pkcs11=token["uri"])
    with _session(token) as s:
        key = next(s.get_objects({Attribute.CLASS: pkcs11.ObjectClass.PRIVATE_KEY, Attribute.ID: token["id"]}))
        assert key[Attribute.SENSITIVE] is True and key[Attribute.EXTRACTABLE] is False
        assert key[Attribute.NEVER_EXTRACTABLE] is True
        with pytest.raises(pkcs11.exceptions.AttributeSensitive):
            key[Attribute.VALUE]
    key_file = json.loads((tmp_path / "home" / "keys" / "rel.json").read_text())
    sealed = tgsp._seal.open_sealed(key_file["versions"][0]["sealed"], PASS, tgsp.canonical.encode(
        {"kind": "signing", "public": key_file["versions"][0]["public"]}))
    assert set(json.loads(sealed)) == {"ml-dsa-65"}  # nothing of the Ed25519 key is in the keyring


@pytest.mark.parametrize("case,needle", [
    ("wrong-pin", "wrong PIN"), ("no-module", "TGFLOW_PKCS11_MODULE is not set"),
    ("bad-module", "does not exist"), ("no-pin", "no PIN was given")])
def test_token_problems_exit_3_with_a_clear_message(token, tmp_path, capsys, monkeypatch, case, needle):
    home = tmp_path / "home"
    assert run(capsys, monkeypatch, home, "key", "generate", "rel", "--pkcs11", token["uri"])[0] == 0
    if case == "wrong-pin":
        monkeypatch.setenv("TGFLOW_PKCS11_PIN", "0000")
    elif case == "no-module":
        monkeypatch.delenv("TGFLOW_PKCS11_MODULE")
    elif case == "bad-module":
        monkeypatch.setenv("TGFLOW_PKCS11_MODULE", str(tmp_path / "nope.so"))
    elif case == "no-pin":
        monkeypatch.delenv("TGFLOW_PKCS11_PIN")
    code, _, err = run(capsys, monkeypatch, home, "tgsp", "build", make_adapter(tmp_path / "src"), "-o",
                       tmp_path / "p.tgsp", "--sign", "rel")
    assert code == 3 and needle in err and "internal error" not in err
    assert not (tmp_path / "p.tgsp").exists()


def test_a_removed_token_exits_3(token, tmp_path):
    """In real processes: the token is there for generate, gone for the signing run."""
    label = "gone-" + token["id"].hex()
    init_token(token["util"], token["env"], label)
    env = {**token["env"], "TGFLOW_HOME": str(tmp_path / "home"), "TGFLOW_PASSPHRASE": PASS,
           "TGFLOW_PKCS11_MODULE": token["module"], "TGFLOW_PKCS11_PIN": USER_PIN}
    cli = [*tgflow_exe()]
    subprocess.run(cli + ["key", "generate", "rel", "--pkcs11", f"pkcs11:token={label};id=%01"], env=env,
                   check=True, capture_output=True)
    subprocess.run([token["util"], "--delete-token", "--token", label], env=env, check=True, capture_output=True)
    proc = subprocess.run(cli + ["tgsp", "build", str(make_adapter(tmp_path / "src")), "-o", str(tmp_path / "p.tgsp"),
                                 "--sign", "rel"], env=env, capture_output=True, text=True)
    assert proc.returncode == 3 and f"no PKCS#11 token '{label}'" in proc.stderr
    assert not (tmp_path / "p.tgsp").exists()


def test_rotation_software_to_token_and_back(token, tmp_path):
    signer_kr = Keyring(tmp_path / "signer")
    v1 = signer_kr.generate("rel", "signing", pp)
    verifier = Keyring(tmp_path / "verifier")
    (tmp_path / "v1.json").write_text(json.dumps(v1.to_dict()))
    verifier.import_public(tmp_path / "v1.json")
    src = make_adapter(tmp_path / "src")
    custodies = []
    for step, uri in enumerate([None, token["uri"], None]):
        if step:
            signer_kr.rotate("rel", pp, pkcs11=uri)
        pkg = tmp_path / f"v{step + 1}.tgsp"
        tgsp.build(src, pkg, signers=[signer_kr.signer("rel", pp)])
        report = tgsp.verify(pkg, verifier.trust_policy())
        assert report.ok, report.first_failure
        with tgsp.open_package(pkg) as opened:
            custodies.append(next(iter(opened.manifest["custody"].values()))["ed25519"])
        hard = tgsp.verify(pkg, verifier.trust_policy(require_hardware="ed25519"))
        assert hard.ok is (uri is not None)
    assert custodies == ["software", "pkcs11", "software"]
    walked = signer_kr.public_file("rel").lineage.walk()
    assert [v.version for v in walked] == [1, 2, 3]
    versions = signer_kr.show("rel")["versions"]
    assert [v["custody"]["ed25519"] for v in versions] == custodies


def test_require_hardware_all_needs_ml_dsa_in_the_token_too(token, tmp_path, capsys, monkeypatch):
    home = tmp_path / "home"
    run(capsys, monkeypatch, home, "key", "generate", "rel", "--pkcs11", token["uri"])
    run(capsys, monkeypatch, home, "key", "generate", "soft")
    src = make_adapter(tmp_path / "src")
    for name in ("rel", "soft"):
        run(capsys, monkeypatch, home, "tgsp", "build", src, "-o", tmp_path / f"{name}.tgsp", "--sign", name)
    code, _, err = run(capsys, monkeypatch, home, "tgsp", "verify", tmp_path / "soft.tgsp", "--require-hardware", "ed25519")
    assert code == 1 and "ed25519 key is not held in hardware" in err
    code, _, err = run(capsys, monkeypatch, home, "tgsp", "verify", tmp_path / "rel.tgsp", "--require-hardware", "all")
    assert code == 1 and "ml-dsa-65 key is not held in hardware" in err
    assert run(capsys, monkeypatch, home, "tgsp", "verify", tmp_path / "rel.tgsp", "--require-hardware", "ed25519")[0] == 0


def test_adopting_by_id_works_and_an_ambiguous_label_is_refused(token, tmp_path, capsys, monkeypatch):
    from pkcs11 import Attribute, KeyType, Mechanism

    with _session(token) as s:  # two keys with one label, as SoftHSM allows
        for key_id in (b"\x01", b"\x02"):
            common = {Attribute.TOKEN: True, Attribute.ID: key_id, Attribute.LABEL: "dup"}
            s.generate_keypair(KeyType.EC_EDWARDS, mechanism=Mechanism.EC_EDWARDS_KEY_PAIR_GEN, store=True,
                               public_template={**common, Attribute.EC_PARAMS: P.ED25519_OID},
                               private_template={**common, Attribute.SIGN: True, Attribute.SENSITIVE: True,
                                                 Attribute.EXTRACTABLE: False})
    home = tmp_path / "home"
    code, _, err = run(capsys, monkeypatch, home, "key", "import-pkcs11", "a", "pkcs11:token=tgflow-test;object=dup")
    assert code == 3 and "2 Ed25519 keys" in err and "refusing to guess" in err
    assert run(capsys, monkeypatch, home, "key", "import-pkcs11", "b", "pkcs11:token=tgflow-test;object=dup;id=%02")[0] == 0
    pkg = tmp_path / "p.tgsp"
    assert run(capsys, monkeypatch, home, "tgsp", "build", make_adapter(tmp_path / "src"), "-o", pkg, "--sign", "b")[0] == 0
    assert run(capsys, monkeypatch, home, "tgsp", "verify", pkg, "--require-hardware", "ed25519")[0] == 0
    code, _, err = run(capsys, monkeypatch, home, "key", "generate", "c", "--pkcs11", "pkcs11:token=tgflow-test;id=%02")
    assert code == 3 and "already holds a key" in err
    with _session(token) as s:  # leave the shared token as we found it
        for obj in list(s.get_objects({Attribute.LABEL: "dup"})):
            obj.destroy()


def test_revocation_signed_by_a_token_key(token, tmp_path):
    kr = Keyring(tmp_path / "home")
    kr.generate("rel", "signing", pp, pkcs11=token["uri"])
    kr.rotate("rel", pp)  # v2 in software; revoke v1 (the token key) with v2
    v1 = kr.public_file("rel").lineage.walk()[0].key.keyid
    rev = kr.revoke(v1, "retired token", pp)
    assert rev.keyid == v1
    kr2 = Keyring(tmp_path / "home2")
    kr2.generate("rel", "signing", pp)
    kr2.rotate("rel", pp, pkcs11=token["uri"].replace("object=release", "object=second").rsplit("id=", 1)[0]
               + "id=%ff" + token["uri"][-3:])  # a token key, v2, signs the revocation of v1
    v1b = kr2.public_file("rel").lineage.walk()[0].key.keyid
    assert kr2.revoke(v1b, "retired", pp).keyid == v1b


@given(token=st.text(min_size=1, max_size=20), obj=st.text(max_size=20), key_id=st.binary(max_size=16))
def test_uri_round_trips(token, obj, key_id):
    uri = P.Uri(token=token, object=obj or None, id=key_id or None)
    assert P.parse_uri(str(uri)) == uri


@pytest.mark.parametrize("text,needle", [
    ("pkcs11:token=t;id=%01?pin-value=1234", "pin-value is not accepted"),
    ("pkcs11:token=t?module-path=/tmp/evil.so", "module-path is not accepted"),
    ("pkcs11:object=x", "names no token"), ("pkcs11:token=t;bogus=1", "unknown PKCS#11 URI attribute"),
    ("pkcs11:token=t;id=%zz", "percent-encoded"), ("hsm://slot/1", "not a PKCS#11 URI"),
    ("pkcs11:token=t;token=u", "given twice")])
def test_bad_uris_are_refused(text, needle):
    with pytest.raises(InputError, match=needle):
        P.parse_uri(text)
