"""n2he end to end, through the real CLI: three sites train and encrypt, the aggregator sums
ciphertexts without any secret key, the key holder re-sums, decrypts and releases. The
released adapter is compared with the plaintext aggregation of the same updates."""

from __future__ import annotations

import json

import numpy as np
import pytest

import tgsp
from tests.helpers import PASS, pp

from .conftest import SITES, cli


def _weights(path, home, recipient: str) -> dict[str, np.ndarray]:
    from safetensors.numpy import load

    from runners.learn.adapters import read_release
    from runners.state.keys import identities_for

    kr = tgsp.Keyring(home)
    return load(read_release(path, kr.trust_policy(kind="adapter"), identities_for(kr, [recipient], pp)).weights)


def _events(path) -> dict:
    with tgsp.open_package(path) as p:
        return {e["type"]: e["data"] for e in p.evidence}


@pytest.fixture(scope="module")
def released(roles):
    ups = [roles.updates[s] for s in SITES]
    rc, summed = roles.aggregate("agg-e2e", ups)
    assert rc == 0
    assert roles.decrypt("kh-e2e", summed, ups, "--json") == 0
    return summed, roles.root / "out/kh-e2e/support.tgsp"


def test_the_decrypted_aggregate_equals_plaintext_aggregation_and_passes_the_gate(roles, released):
    """Same sites, same data, same seeds, in plaintext (privacy.mode off, no quantization):
    its ffa aggregation and the n2he one agree within 1e-6 relative error."""
    plain = [roles.site(f"plain-{s}", s, mode="off") for s in SITES]
    spec = roles.spec("plain-agg", mode="off", output={"path": "out/plain-agg/support.tgsp", "signing_key": "aggregator-sign",
                                                       "recipients": ["aggregator"], "registry": "out/plain-agg/registry"})
    assert cli(roles.agg, "fed", "aggregate", *map(str, plain), "--spec", str(spec), "--quorum", "2") == 0
    want = _weights(roles.root / "out/plain-agg/support.tgsp", roles.agg, "aggregator")
    got = _weights(released[1], roles.kh, "operator")
    assert set(got) == set(want) and len(got) == 16
    for name in want:
        err = np.linalg.norm(got[name] - want[name]) / max(np.linalg.norm(want[name]), 1e-30)
        assert err < 1e-6, (name, err)
        if "lora_A" in name:
            assert np.array_equal(got[name], want[name])  # ffa: A is the shared start, untouched
    assert any(np.abs(w).max() > 0 for k, w in want.items() if "lora_B" in k)


def test_the_release_names_every_contributing_update_and_its_privacy(roles, released):
    summed, pkg = released
    kr = tgsp.Keyring(roles.kh)
    ids = {tgsp.verify(roles.updates[s], kr.trust_policy()).package_id for s in SITES}
    ev = _events(pkg)
    agg = ev["tgflow.federation.aggregate"]
    assert {a["update"] for a in agg["accepted"]} == ids
    assert agg["custody"] == "key-holder" and agg["sum"] == tgsp.verify(summed, kr.trust_policy()).package_id
    assert agg["norm"] <= agg["norm_bound"]
    assert ev["tgflow.privacy"]["he"]["custody"] == "key-holder"
    assert {s["mode"] for s in ev["tgflow.privacy"]["sites"]} == {"n2he"}
    registered = list((roles.root / "out/kh-e2e/registry/routes/support/packages").glob("*.tgsp"))
    assert [tgsp.verify(p, kr.trust_policy()).package_id for p in registered] == [
        tgsp.verify(pkg, kr.trust_policy()).package_id]


def test_the_aggregator_holds_no_he_secret_and_cannot_decrypt(roles, released, capsys):
    """Key custody: the aggregator's keyring has the public context only."""
    from tgsp.he_store import HEKeys

    he = HEKeys(tgsp.Keyring(roles.agg))
    assert not he.is_own("route-he") and not (roles.agg / "he" / "route-he").exists()
    assert HEKeys(tgsp.Keyring(roles.kh)).is_own("route-he")
    capsys.readouterr()
    assert cli(roles.agg, "key", "list", "--json") == 0
    listed = {k["name"]: k for k in json.loads(capsys.readouterr().out)}
    assert listed["route-he"]["kind"] == "he" and listed["route-he"]["private"] is False
    # The public context itself holds no secret key.
    from runners.n2he import context

    assert not context.public(tgsp.Keyring(roles.agg), "route-he").ctx.has_secret_key()
    # And fed decrypt at the aggregator stops at the missing secret: exit 3, nothing written.
    spec = roles.spec("agg-tries", n2he={"key_holder": "aggregator"})
    rc = cli(roles.agg, "fed", "decrypt", str(released[0]), *map(str, (roles.updates[s] for s in SITES)),
             "--spec", str(spec), "--aggregator", "aggregator-sign", "--quorum", "2")
    assert rc != 0 and not (roles.root / "out/agg-tries/support.tgsp").exists()


def test_the_sum_holds_ciphertexts_only_and_lists_what_it_sums(roles, released):
    summed = released[0]
    with tgsp.open_package(summed) as p:
        m = p.manifest
    assert m["kind"] == "he-sum"
    assert sorted(f["path"] for f in m["files"]) == ["he/00000.ct", "he/00001.ct", "modules.json"]
    fed = m["federation"]
    assert fed["format"] == "tgflow.he-sum/1" and len(fed["summed"]) == 3
    assert fed["he"]["total_weight"] == sum(c["weight"] for c in fed["summed"])
    # Encrypted to the key holder's recipient key only.
    kh = tgsp.Keyring(roles.kh).public_file("keyholder").keyid
    assert [r["keyid"] for r in m["encryption"]["recipients"]] == [kh]


def test_a_replayed_sum_is_refused_once_released(roles, released, capsys):
    ups = [roles.updates[s] for s in SITES]
    spec = roles.spec("kh-e2e")  # the same route state as the release above
    capsys.readouterr()
    rc = cli(roles.kh, "fed", "decrypt", str(released[0]), *map(str, ups), "--spec", str(spec),
             "--aggregator", "aggregator-sign", "--quorum", "2", "-o", str(roles.root / "out/kh-e2e/again.tgsp"))
    err = capsys.readouterr().err
    assert rc == 1 and "replay" in err
    assert not (roles.root / "out/kh-e2e/again.tgsp").exists()


def test_key_generate_he_then_export_holds_no_secret(tmp_path, monkeypatch, capsys):
    from runners.n2he import ckks

    monkeypatch.setenv("TGFLOW_PASSPHRASE", PASS)
    home = tmp_path / "h"
    assert cli(home, "key", "generate", "he1", "--type", "he", "--json") == 0
    info = json.loads(capsys.readouterr().out)
    assert info["kind"] == "he" and info["params"]["poly_modulus_degree"] == 8192
    assert cli(home, "key", "export-public", "he1", "-o", str(tmp_path / "he1.json")) == 0
    import base64

    import tenseal as ts

    exported = json.loads((tmp_path / "he1.json").read_text())
    assert exported["type"] == "tgflow-he-public/1" and exported["context_id"] == info["context_id"]
    assert not ts.context_from(base64.b64decode(exported["context"])).has_secret_key()
    ckks.load_public(base64.b64decode(exported["context"]))  # a usable public context
    # The secret is sealed at rest: no key material in the clear on disk.
    sealed = (home / "he" / "he1" / "v1.sealed").read_bytes()
    assert b"argon2id" in sealed and b"aes-256-gcm" in sealed
    # Rotation makes version 2; both versions' secrets stay.
    assert cli(home, "key", "rotate", "he1") == 0
    assert (home / "he" / "he1" / "v2.sealed").exists()
    assert cli(home, "key", "audit") == 0


def test_dp_and_n2he_combine_at_a_site(roles):
    """A dp section beside n2he: DP-SGD trains (its ledger is charged), then the update is
    encrypted; the manifest's privacy record carries both, and no private count travels."""
    dp = {"max_grad_norm": 1.0, "noise_multiplier": 1.0, "target_delta": 1e-5}
    federation = {"round": "2026-12-01", "aggregator": "aggregator", "method": "ffa", "sites": list(SITES),
                  "compression": {"quantize": "none"}, "public_examples": 50}
    training = {"steps": 3, "batch_size": 16, "learning_rate": 0.003, "seed": 7, "max_seq_len": 96}
    spec_over = dict(federation=federation, training=training)
    update = roles.site("dp-site-a", "site-a", **spec_over,
                        privacy={"mode": "n2he", "dp": dp, "n2he": {"context": "route-he", "key_holder": "keyholder"}})
    m = tgsp.verify(update, tgsp.Keyring(roles.sites).trust_policy()).manifest
    assert m["privacy"]["mode"] == "n2he" and m["privacy"]["training"]["mode"] == "dp"
    assert m["privacy"]["training"]["epsilon"] > 0
    assert m["federation"]["examples"] == 50 and m["federation"]["he"]["weight"] == 50
    ledger = list((roles.root / "out/dp-site-a/.tgflow-state/support").glob("*ledger*"))
    assert ledger, "the DP ledger was charged"


def test_one_name_one_key_across_kinds(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("TGFLOW_PASSPHRASE", PASS)
    home = tmp_path / "h"
    assert cli(home, "key", "generate", "k", "--type", "he") == 0
    assert cli(home, "key", "generate", "k", "--type", "signing") == 3
    assert cli(home, "key", "generate", "s", "--type", "signing") == 0
    assert cli(home, "key", "generate", "s", "--type", "he") == 3
    assert cli(home, "key", "revoke", "k", "--reason", "x") == 2
    assert "rotated, not revoked" in capsys.readouterr().err
    assert cli(home, "key", "list") == 0 and "he" in capsys.readouterr().out
