"""Shared-key custody (NVFlare's model, offered for compatibility): the HE secret goes to the
sites as a signed, encrypted package; the aggregator still holds no secret; a site decrypts
the aggregator's sum, trusting its signed list (it cannot read the other sites' updates)."""

from __future__ import annotations

import json

import pytest

import tgsp
from tgsp.he_store import HEKeys

from tests.helpers import pp

from .conftest import SITES, TRAINING, cli


@pytest.fixture(scope="module")
def shared(roles):
    pub = roles.root / "pub"
    assert cli(roles.sites, "key", "generate", "sites-r", "--type", "recipient") == 0
    assert cli(roles.sites, "key", "export-public", "sites-r", "-o", str(pub / "sites-r.json")) == 0
    assert cli(roles.kh, "key", "import", str(pub / "sites-r.json")) == 0
    assert cli(roles.agg, "key", "import", str(pub / "sites-r.json")) == 0
    for src, name in ((roles.kh, "release"), (roles.agg, "aggregator-sign")):
        assert cli(roles.sites, "key", "import", str(pub / f"{src.name}-{name}.json")) == 0
    assert cli(roles.kh, "key", "generate", "shared-he", "--type", "he") == 0
    assert cli(roles.kh, "key", "export-public", "shared-he", "-o", str(pub / "shared-he.json")) == 0
    assert cli(roles.agg, "key", "import", str(pub / "shared-he.json")) == 0
    secret = roles.root / "shared-he.secret.tgsp"
    assert cli(roles.kh, "key", "export-secret", "shared-he", "--to", "sites-r", "--sign", "release",
               "-o", str(secret)) == 0
    return secret


N2HE = {"context": "shared-he", "custody": "shared-key", "key_holder": None}


def test_the_secret_travels_signed_and_encrypted_and_is_sealed_on_import(roles, shared, capsys):
    with tgsp.open_package(shared) as p:
        m = p.manifest
    assert m["kind"] == "he-secret" and len(m["encryption"]["recipients"]) == 1
    he = HEKeys(tgsp.Keyring(roles.kh))
    secret = he.secret("shared-he", pp, he.public("shared-he").context_id)
    data = shared.read_bytes()
    assert all(secret[i:i + 64] not in data for i in range(0, len(secret) - 64, 4096))  # never in the clear
    # Only from the trusted signer.
    assert cli(roles.sites, "key", "import", str(shared), "--from", "aggregator-sign") == 1
    capsys.readouterr()
    assert cli(roles.sites, "key", "import", str(shared), "--from", "release", "--json") == 0
    assert json.loads(capsys.readouterr().out)["name"] == "shared-he"
    assert HEKeys(tgsp.Keyring(roles.sites)).is_own("shared-he")
    assert not HEKeys(tgsp.Keyring(roles.agg)).is_own("shared-he")


def test_a_shared_key_round_sums_and_a_site_decrypts(roles, shared, capsys):
    from runners.n2he import context

    if not HEKeys(tgsp.Keyring(roles.sites)).is_own("shared-he"):
        assert cli(roles.sites, "key", "import", str(shared), "--from", "release") == 0
    ups = [roles.site(f"shared-{s}", s, n2he=N2HE, training=TRAINING) for s in SITES]
    kr = tgsp.Keyring(roles.sites)
    for u in ups:  # encrypted to the aggregator only: the other sites, which hold the secret, cannot open it
        m = tgsp.verify(u, kr.trust_policy()).manifest
        assert [r["keyid"] for r in m["encryption"]["recipients"]] == [kr.public_file("aggregator").keyid]
    rc, summed = roles.aggregate("agg-shared", ups, n2he=N2HE, output={
        "path": "out/agg-shared/sum.tgsp", "signing_key": "aggregator-sign", "recipients": ["sites-r"]})
    assert rc == 0
    spec = roles.spec("site-decrypts", n2he=N2HE, output={
        "path": "out/site-decrypts/support.tgsp", "signing_key": "site-a", "recipients": ["operator"],
        "registry": "out/site-decrypts/registry"})
    capsys.readouterr()
    rc = cli(roles.sites, "fed", "decrypt", str(summed), "--spec", str(spec), "--aggregator", "aggregator-sign",
             "--key", "sites-r", "--quorum", "3", "--json")
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert rc == 0, out
    agg = out["training"]["aggregation"]
    assert agg["custody"] == "shared-key" and len(agg["accepted"]) == 3
    assert context.public(kr, "shared-he").id == agg["context"]
    # A second decryption of the same sum is a replay.
    rc = cli(roles.sites, "fed", "decrypt", str(summed), "--spec", str(spec), "--aggregator", "aggregator-sign",
             "--key", "sites-r", "--quorum", "3", "-o", str(roles.root / "out/site-decrypts/again.tgsp"))
    assert rc == 1 and not (roles.root / "out/site-decrypts/again.tgsp").exists()


def test_a_he_secret_whose_signed_description_is_not_its_context_is_refused(roles, shared, capsys, tmp_path):
    """The signed he_key names another context id than the one the package carries (issue 26)."""
    from runners.n2he import share
    from tgsp.builder import SourceFile
    from tgsp.unpack import read_payload

    sites, kh = tgsp.Keyring(roles.sites), tgsp.Keyring(roles.kh)
    report, files = read_payload(shared, sites.trust_policy(), identities=sites.identities("sites-r", pp))
    he_key = {**report.manifest["he_key"], "context_id": "sha256:" + "ab" * 32}
    forged = tmp_path / "forged.tgsp"
    tgsp.build(".", forged, route="he-keys", kind=share.KIND, recipients=[kh.resolve_public("sites-r").key],
               signers=[kh.signer("release", pp)], extra={"he_key": he_key},
               files=[SourceFile(n, tmp_path / n, len(d), d) for n, d in sorted(files.items())])
    assert cli(roles.sites, "key", "import", str(forged), "--from", "release") == 2
    assert "signed he_key does not describe the context it carries" in capsys.readouterr().err
