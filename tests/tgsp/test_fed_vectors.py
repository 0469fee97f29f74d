"""The federation test vectors (tests/vectors/federation/, scripts/make_fed_vectors.py): a route
index, a plaintext update and an n2he update pair with its he-sum still verify, decode and
decrypt to what expected.json records, so a second implementation of format.md §11-§13 can
check itself against the same files."""

from __future__ import annotations

import hashlib
import json
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pytest

import tgsp
from runners.fed import compress, updates
from runners.n2he import ckks, layout
from tgsp import route_index
from tgsp.errors import ExpiredError
from tgsp.keyring_trust import load_public_file
from tgsp.unpack import read_payload

V = Path(__file__).resolve().parents[1] / "vectors"
F = V / "federation"
EXPECTED = json.loads((F / "expected.json").read_text())
PASS = "tgflow-test-vectors-not-secret"
SIGNED_AT = datetime(2026, 3, 1, 12, 0, 0, tzinfo=timezone.utc)  # the index lives 30 days from here


def _policy(**kw):
    keys = [load_public_file(V / "trust" / f"{n}.pub.json") for n in ("vector-signer", "vector-rotating")]
    return tgsp.TrustPolicy(trusted=keys, **kw)


def _identities():
    return tgsp.Keyring(V / "keyring").identities("vector-recipient", lambda: PASS)


def test_the_route_index_vector_reads_as_format_md_11_says():
    want = EXPECTED["route-index"]
    route = F / "registry" / "routes" / "vectors"
    raw = (route / "index.json").read_bytes()
    assert hashlib.sha256(raw).hexdigest() == want["index_sha256"] and raw.endswith(b"}\n")
    doc = route_index.verify(raw, _policy(now=lambda: SIGNED_AT), route="vectors")
    target = doc["aliases"][want["alias"]]
    assert (doc["version"], target["package_id"]) == (want["version"], want["package_id"])
    entry = next(e for e in doc["packages"] if e["package_id"] == target["package_id"])
    assert entry["file"] == want["file"] and target["version"] == entry["version"]
    package = route / entry["file"]
    assert hashlib.sha256(package.read_bytes()).hexdigest() == entry["sha256"]
    assert tgsp.verify(package, _policy(route="vectors", kind="adapter")).package_id == entry["package_id"]
    with pytest.raises(ExpiredError):  # today it is frozen: nobody re-signed it
        route_index.verify(raw, _policy(), route="vectors")


def test_the_plaintext_update_vector_decodes_to_its_recorded_deltas():
    want = EXPECTED["update.tgsp"]
    report, files = read_payload(F / "update.tgsp", _policy(kind=updates.KIND), identities=_identities())
    assert report.package_id == want["package_id"]
    fed = report.manifest["federation"]
    assert fed["format"] == updates.FORMAT and fed["compression"] == want["codec"]
    assert fed["modules_sha256"] == updates.modules_digest(want["modules"])
    assert json.loads(files[updates.INDEX])["modules"] == want["modules"]
    codec = updates.codec_of(fed)
    from safetensors.numpy import load

    for k, name in enumerate(want["modules"]):
        a, b, other = updates.split_factors(load(files[updates.delta_file(k)]))
        assert not other
        for factor, parts in (("A", a), ("B", b)):
            got = hashlib.sha256(np.ascontiguousarray(compress.decode(parts, codec), "<f4").tobytes()).hexdigest()
            assert got == want["decoded_sha256"][f"{name}.{factor}"]


def test_the_he_sum_vector_sums_its_updates_and_decrypts_to_the_recorded_values():
    pytest.importorskip("tenseal")
    from runners.recipes.decrypt import _contradiction
    from tgsp.he_store import HEKeys, HEPublic

    want = EXPECTED["he"]
    pub = HEPublic.from_dict(json.loads((F / "vector-he.public.json").read_text()))
    params = ckks.Params.from_dict(pub.params)
    ctx = ckks.load_public(pub.context, params)  # the checks key import runs
    assert pub.context_id == want["context_id"]
    for site, pid in want["updates"].items():
        r = tgsp.verify(F / f"update-he-{site}.tgsp", _policy(kind=updates.KIND))
        assert r.ok and r.package_id == pid and r.manifest["federation"]["he"]["context"] == pub.context_id
    report, files = read_payload(F / "he-sum.tgsp", _policy(kind=layout.SUM_KIND), identities=_identities())
    fed = report.manifest["federation"]
    assert report.package_id == want["package_id"] and fed["format"] == layout.SUM_FORMAT
    assert _contradiction(fed["he"], fed["summed"]) is None and fed["he"]["total_weight"] == want["total_weight"]
    assert {c["site"]: c["update"] for c in fed["summed"]} == want["updates"]
    # The sum is the sum of the updates' ciphertexts: re-summing them gives the same bytes.
    import tenseal as ts

    parts = [read_payload(F / f"update-he-{s}.tgsp", _policy(kind=updates.KIND), identities=_identities())[1]
             for s in want["updates"]]
    for k in range(fed["he"]["ciphertexts"]):
        again = ts.ckks_vector_from(ctx, parts[0][layout.ct_file(k)]) + ts.ckks_vector_from(ctx, parts[1][layout.ct_file(k)])
        assert again.serialize() == files[layout.ct_file(k)]
    store = HEKeys(tgsp.Keyring(V / "keyring"))
    secret = ckks.load_secret(store.secret("vector-he", lambda: PASS, pub.context_id), pub.context_id, params)
    values = ckks.decrypt(secret, [files[layout.ct_file(k)] for k in range(fed["he"]["ciphertexts"])],
                          want["values"], params)
    assert np.allclose(values[:8], want["sum_first_8"], atol=1e-5)
    rounded = np.round(values * 2**22) / 2**22
    assert hashlib.sha256(np.ascontiguousarray(rounded, "<f4").tobytes()).hexdigest() == want["sum_sha256_rounded_2^-22"]
