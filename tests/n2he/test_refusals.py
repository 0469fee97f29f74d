"""n2he refusals, each with a clear message and nothing decrypted or written: sub-quorum sums,
single updates, other contexts, weak parameters, stale keys, tampered and untrusted
ciphertexts (never deserialized), a dishonest aggregator, a site that did not clip."""

from __future__ import annotations

import hashlib
import json
from datetime import timedelta
from pathlib import Path

import pytest

import tgsp
from tests.helpers import pp
from tgsp import clock
from tgsp.he_store import HEPublic

from .conftest import EXAMPLES, cli

SITE_A = EXAMPLES / "feeds/fed/site-a.jsonl"


def _json_err(capsys) -> str:
    return capsys.readouterr().err


def rebuild(roles, src: Path, out: Path, *, home: Path, signer: str, reader: str = "keyholder",
            reader_home: Path | None = None, fed=None, files=None, kind: str | None = None,
            recipients=("aggregator", "keyholder")) -> Path:
    """``src`` opened (as ``reader``), changed, and signed again by ``signer`` from ``home``: what a
    dishonest party holding that key could send."""
    from runners.state.keys import identities_for

    rkr, kr = tgsp.Keyring(reader_home or roles.kh), tgsp.Keyring(home)
    report = tgsp.verify(src, rkr.trust_policy())
    folder = out.parent / (out.name + ".src")
    tgsp.unpack(src, folder, rkr.trust_policy(), identities=identities_for(rkr, [reader], pp))
    m = report.manifest
    federation = fed(json.loads(json.dumps(m["federation"]))) if fed else m["federation"]
    if files:
        files(folder)
    keys = [kr.resolve_public(r).key for r in recipients]
    tgsp.build(folder, out, route=m["route"], kind=kind or m["kind"], recipients=keys,
               signers=[kr.signer(signer, pp)], extra={"federation": federation, "privacy": m.get("privacy")})
    return out


@pytest.fixture(scope="module")
def sum_ab(roles):
    rc, summed = roles.aggregate("agg-ab", [roles.updates["site-a"], roles.updates["site-b"]])
    assert rc == 0
    return summed


def test_a_sum_below_the_quorum_is_not_decrypted(roles, sum_ab, capsys):
    rc = roles.decrypt("kh-q3", sum_ab, [roles.updates["site-a"], roles.updates["site-b"]], quorum="3")
    err = _json_err(capsys)
    assert rc == 14 and "refusing to decrypt" in err and "at least 3" in err
    assert not (roles.root / "out/kh-q3").exists()


def test_a_single_update_is_never_a_sum(roles, sum_ab, capsys):
    # The aggregator refuses a quorum of one, and a lone update misses the quorum of two.
    spec = roles.aggregator_spec("agg-one")
    assert cli(roles.agg, "fed", "aggregate", str(roles.updates["site-a"]), "--spec", str(spec), "--quorum", "1") == 2
    assert "at least 2" in _json_err(capsys)
    rc, _ = roles.aggregate("agg-lone", [roles.updates["site-a"]])
    assert rc == 14 and not (roles.root / "out/agg-lone").exists()
    # The key holder refuses --quorum 1, and an update handed over as if it were a sum.
    assert roles.decrypt("kh-one", sum_ab, [], quorum="1") == 2
    capsys.readouterr()
    assert roles.decrypt("kh-upd", roles.updates["site-a"], [roles.updates["site-a"]]) == 1
    assert "failed verification" in _json_err(capsys)
    # A dishonest aggregator's sum that lists one update, signed by it: refused before decryption.
    one = rebuild(roles, sum_ab, roles.root / "forged/one.tgsp", home=roles.agg, signer="aggregator-sign",
                  fed=lambda f: {**f, "summed": f["summed"][:1],
                                 "he": {**f["he"], "total_weight": f["summed"][0]["weight"]}}, recipients=("keyholder",))
    assert roles.decrypt("kh-forged-one", one, [roles.updates["site-a"], roles.updates["site-b"]]) == 14
    assert "a sum of one is that update" in _json_err(capsys)
    assert not (roles.root / "out/kh-forged-one").exists()


@pytest.mark.parametrize("change,says", [
    (lambda f: {**f, "he": {**f["he"], "total_weight": f["he"]["total_weight"] + 1}}, "is not the sum of the listed"),
    (lambda f: {**f, "summed": [f["summed"][0], {**f["summed"][1], "site_key": f["summed"][0]["site_key"]}]},
     "names an update or a site twice"),
    (lambda f: {**f, "summed": [f["summed"][0], f["summed"][0]]}, "names an update or a site twice"),
], ids=["total weight", "a site twice", "an update twice"])
def test_a_signed_sum_that_contradicts_itself_is_refused(roles, sum_ab, capsys, request, change, says):
    """Its release would still be right (the key holder re-sums its own list), but under shared-key
    custody the list is all a site has: a signed document that contradicts itself is refused (issue 26)."""
    name = request.node.callspec.id.replace(" ", "-")
    forged = rebuild(roles, sum_ab, roles.root / f"forged/odd-{name}.tgsp", home=roles.agg, signer="aggregator-sign",
                     fed=change, recipients=("keyholder",))
    rc = roles.decrypt("kh-odd", forged, [roles.updates["site-a"], roles.updates["site-b"]])
    err = _json_err(capsys)
    assert rc == 1 and says in err and "nothing was decrypted" in err
    assert not (roles.root / "out/kh-odd").exists()


def test_a_sum_that_is_not_the_sum_of_what_it_lists_is_refused(roles, sum_ab, capsys):
    """The aggregator lists site-a and site-b but sends site-a's ciphertexts alone."""
    def only_a(folder: Path) -> None:
        src = roles.root / "forged/a-open"
        tgsp.unpack(roles.updates["site-a"], src, tgsp.Keyring(roles.kh).trust_policy(),
                    identities=tgsp.Keyring(roles.kh).identities("keyholder", pp))
        for ct in (folder / "he").iterdir():
            ct.write_bytes((src / "he" / ct.name).read_bytes())

    forged = rebuild(roles, sum_ab, roles.root / "forged/swapped.tgsp", home=roles.agg, signer="aggregator-sign",
                     files=only_a, recipients=("keyholder",))
    rc = roles.decrypt("kh-swapped", forged, [roles.updates["site-a"], roles.updates["site-b"]])
    assert rc == 1 and "differs from the key holder's own sum" in _json_err(capsys)
    assert not (roles.root / "out/kh-swapped").exists()


def test_an_update_under_another_context_is_refused(roles, capsys):
    assert cli(roles.kh, "key", "generate", "other-he", "--type", "he") == 0
    assert cli(roles.kh, "key", "export-public", "other-he", "-o", str(roles.root / "pub/other-he.json")) == 0
    assert cli(roles.sites, "key", "import", str(roles.root / "pub/other-he.json")) == 0
    other = roles.site("site-c-other", "site-c", n2he={"context": "other-he"},
                       training={"steps": 2, "batch_size": 16, "learning_rate": 0.003, "seed": 7, "max_seq_len": 96})
    capsys.readouterr()
    rc, _ = roles.aggregate("agg-other", [roles.updates["site-a"], roles.updates["site-b"], other], "--json")
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert rc == 0 and len(out["aggregation"]["accepted"]) == 2
    [refused] = out["aggregation"]["refused"]
    assert refused["site"] == "site-c" and "another HE context" in refused["reason"]


def _public_file(roles, name: str, ctx, params: dict, created=None) -> Path:
    from runners.n2he import ckks

    pub = HEPublic(name, 1, clock.fmt(created or clock.utcnow()), params, ckks.public_bytes(ctx))
    path = roles.root / "pub" / f"{name}.json"
    path.write_text(json.dumps(pub.to_dict()))
    return path


def test_parameters_below_128_bit_are_refused(roles, capsys):
    import tenseal as ts

    # SEAL itself will not make a context above the bounds; declared ones are checked at import.
    small = ts.context(ts.SCHEME_TYPE.CKKS, 4096, coeff_mod_bit_sizes=[40, 20])
    small.global_scale = 2.0 ** 20
    path = _public_file(roles, "weak-he", small, {"scheme": "ckks", "poly_modulus_degree": 4096,
                                                  "coeff_mod_bit_sizes": [60, 60], "scale_bits": 40})
    assert cli(roles.sites, "key", "import", str(path)) == 2
    assert "below 128-bit" in _json_err(capsys)
    # A context whose own parameters are not the declared ones is refused at import (issue 26)...
    from runners.n2he import ckks

    lying = _public_file(roles, "lying-he", small, ckks.DEFAULT.to_dict())
    assert cli(roles.sites, "key", "import", str(lying)) == 2
    assert "own parameters are not the ones it is recorded with" in _json_err(capsys)
    # ...and at use, where one reached the trust store some other way (a keyring from before that check).
    trusted = roles.sites / "he" / "trusted"
    trusted.mkdir(parents=True, exist_ok=True)
    (trusted / "lying-he.json").write_bytes(lying.read_bytes())
    spec = roles.spec("site-lying", n2he={"context": "lying-he"}, feed={"type": "jsonl", "uri": str(SITE_A)},
                      output={"path": "out/site-lying/update.tgsp", "signing_key": "site-a", "recipients": ["operator"]})
    assert cli(roles.sites, "peft", "run", "--spec", str(spec)) == 2
    assert "own parameters are not the ones it is recorded with" in _json_err(capsys)
    assert not (roles.root / "out/site-lying").exists()


def test_a_stale_he_key_is_refused_at_the_site(roles, capsys):
    from runners.n2he import ckks

    ctx = ckks.new_secret_context()
    path = _public_file(roles, "old-he", ctx, ckks.DEFAULT.to_dict(), created=clock.utcnow() - timedelta(days=200))
    assert cli(roles.sites, "key", "import", str(path)) == 0
    spec = roles.spec("site-old", n2he={"context": "old-he"}, output={
        "path": "out/site-old/update.tgsp", "signing_key": "site-a", "recipients": ["operator"]},
        feed={"type": "jsonl", "uri": str(SITE_A)})
    assert cli(roles.sites, "peft", "run", "--spec", str(spec)) == 2
    err = _json_err(capsys)
    assert "200 days old" in err and "key rotate old-he" in err
    assert not (roles.root / "out/site-old").exists()


def test_tampered_and_untrusted_ciphertexts_are_refused_and_never_deserialized(roles, monkeypatch, capsys):
    import tenseal as ts

    stranger = tgsp.Keyring(roles.sites)
    if "stranger" not in {k.name for k in stranger.list()}:
        assert cli(roles.sites, "key", "generate", "stranger", "--type", "signing") == 0
    bad = b"\x00garbage" * 4096

    def corrupt(folder: Path) -> None:
        (folder / "he" / "00000.ct").write_bytes(bad)

    untrusted = rebuild(roles, roles.updates["site-c"], roles.root / "forged/stranger.tgsp", home=roles.sites,
                        signer="stranger", files=corrupt)
    flipped = roles.root / "forged/flipped.tgsp"
    data = bytearray(roles.updates["site-c"].read_bytes())
    data[len(data) // 2] ^= 0x01  # inside the ciphertexts, after signing
    flipped.write_bytes(bytes(data))
    seen: list[str] = []
    real = ts.ckks_vector_from

    def spy(ctx, blob):
        seen.append(hashlib.sha256(blob).hexdigest())
        return real(ctx, blob)

    monkeypatch.setattr(ts, "ckks_vector_from", spy)
    rc, _ = roles.aggregate("agg-tampered", [roles.updates["site-a"], roles.updates["site-b"], untrusted, flipped],
                            "--json")
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    reasons = {Path(r["path"]).name: r["reason"] for r in out["aggregation"]["refused"]}
    assert rc == 0 and len(out["aggregation"]["accepted"]) == 2
    assert "trust" in reasons["stranger.tgsp"] or "signer" in reasons["stranger.tgsp"]
    assert "flipped.tgsp" in reasons
    assert hashlib.sha256(bad).hexdigest() not in seen
    assert len(seen) == 2 * 2  # two ciphertexts from each of the two accepted updates, nothing else


def test_a_trusted_sites_undecodable_ciphertext_refuses_that_update_only(roles, capsys):
    """Signed by a trusted site, screened, but its ciphertext does not deserialize: the sum goes on
    with the rest while the quorum holds (issue 26; it aborted the whole aggregation)."""
    def corrupt(folder: Path) -> None:
        (folder / "he" / "00001.ct").write_bytes(b"\x00garbage" * 4096)

    bad = rebuild(roles, roles.updates["site-c"], roles.root / "forged/bad-ct.tgsp", home=roles.sites,
                  signer="site-c", files=corrupt)
    rc, _ = roles.aggregate("agg-bad-ct", [roles.updates["site-a"], roles.updates["site-b"], bad], "--json")
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert rc == 0 and sorted(a["site"] for a in out["aggregation"]["accepted"]) == ["site-a", "site-b"]
    (refused,) = out["aggregation"]["refused"]
    assert refused["site"] == "site-c" and "ciphertext 1 does not deserialize" in refused["reason"]


def test_a_site_that_did_not_clip_is_caught_after_decryption(roles, capsys):
    """A trusted site encrypts a huge update it did not clip (poisoning): the decrypted sum's
    norm exceeds what clipped updates can reach, and nothing is released."""
    import numpy as np

    from runners.n2he import ckks, context

    pub = context.public(tgsp.Keyring(roles.sites), "route-he")

    def huge(folder: Path) -> None:
        for k, ct in enumerate(ckks.encrypt(pub.ctx, np.full(6144, 1000.0))):
            (folder / "he" / f"{k:05d}.ct").write_bytes(ct)

    liar = rebuild(roles, roles.updates["site-a"], roles.root / "forged/noclip.tgsp", home=roles.sites,
                   signer="site-a", files=huge)
    ups = [liar, roles.updates["site-b"], roles.updates["site-c"]]
    rc, summed = roles.aggregate("agg-noclip", ups)
    assert rc == 0
    rc = roles.decrypt("kh-noclip", summed, ups)
    assert rc == 1 and "did not clip" in _json_err(capsys)
    assert not (roles.root / "out/kh-noclip/support.tgsp").exists()


def test_exact_merging_is_refused_under_n2he(roles, capsys):
    spec = roles.aggregator_spec("agg-exact")
    rc = cli(roles.agg, "fed", "aggregate", str(roles.updates["site-a"]), str(roles.updates["site-b"]), "--spec",
             str(spec), "--quorum", "2", "--method", "exact")
    assert rc == 2 and "--method exact is not available" in capsys.readouterr().err
    spec = roles.spec("site-exact", federation={"round": "r", "aggregator": "aggregator", "method": "exact"},
                      feed={"type": "jsonl", "uri": str(SITE_A)},
                      output={"path": "out/site-exact/update.tgsp", "signing_key": "site-a", "recipients": ["operator"]})
    assert cli(roles.sites, "peft", "run", "--spec", str(spec)) == 2
    assert "needs federation.method \"ffa\"" in capsys.readouterr().err
    assert not (roles.root / "out/site-exact").exists()
