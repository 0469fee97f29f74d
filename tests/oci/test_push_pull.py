"""tgflow push / pull against a real registry (Debian's docker-registry), checked with the
registry's own HTTP API and with skopeo, an independent OCI client."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess

import pytest

import tgsp
from tgsp import manifest as mf
from tgsp.keyring import Keyring

from tests.helpers import cli, pp

MANIFEST = "application/vnd.oci.image.manifest.v1+json"


def _sha(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_push_stores_one_layer_that_is_the_package_file(registry, world, capsys):
    pkg = world.package(3)
    code, out, err = cli(capsys, "push", pkg, f"oci://{registry.host}/tgflow/support:v3", "--plain-http", "--json")
    assert code == 0, err
    pushed = json.loads(out)
    status, headers, body = registry.api("/v2/tgflow/support/manifests/v3")
    assert status == 200 and headers["docker-content-digest"] == pushed["digest"]
    assert "sha256:" + hashlib.sha256(body).hexdigest() == pushed["digest"]
    m = json.loads(body)
    assert m["artifactType"] == "application/vnd.tgflow.package.v1"
    assert m["config"]["mediaType"] == "application/vnd.oci.empty.v1+json" and m["config"]["size"] == 2
    assert len(m["layers"]) == 1 and m["layers"][0]["digest"] == "sha256:" + _sha(pkg)
    assert m["layers"][0]["size"] == pkg.stat().st_size
    with tgsp.open_package(pkg) as p:
        pid = p.package_id
    ann = m["annotations"]
    assert ann["io.tgflow.route"] == "support" and ann["io.tgflow.version"] == "3"
    assert ann["io.tgflow.kind"] == "adapter" and ann["io.tgflow.package-id"] == pid
    status, _, blob = registry.api(f"/v2/tgflow/support/blobs/{m['layers'][0]['digest']}")
    assert status == 200 and blob == pkg.read_bytes()


def test_evidence_is_a_referrer_under_the_tag_fallback(registry, world, capsys):
    pkg = world.package(1)
    code, out, err = cli(capsys, "push", pkg, f"oci://{registry.host}/tgflow/support:v1", "--plain-http", "--json")
    digest = json.loads(out)["digest"]
    # distribution 2.8 has no Referrers API: the spec's fallback, an index tagged sha256-<hex>
    status, _, body = registry.api(f"/v2/tgflow/support/manifests/{digest.replace(':', '-')}",
                                   accept="application/vnd.oci.image.index.v1+json")
    assert status == 200
    refs = json.loads(body)["manifests"]
    assert [r["artifactType"] for r in refs] == ["application/vnd.tgflow.evidence.v1+jsonl"]
    _, _, ref_manifest = registry.api(f"/v2/tgflow/support/manifests/{refs[0]['digest']}")
    doc = json.loads(ref_manifest)
    assert doc["subject"]["digest"] == digest
    _, _, evidence = registry.api(f"/v2/tgflow/support/blobs/{doc['layers'][0]['digest']}")
    with tgsp.open_package(pkg) as p:
        assert evidence == p.read(mf.EVIDENCE_ENTRY)


def test_pull_verifies_then_writes_and_prints_the_digest_a_tag_resolved_to(registry, world, capsys, tmp_path):
    pkg = world.package(2)
    ref = f"oci://{registry.host}/tgflow/support:v2"
    digest = json.loads(cli(capsys, "push", pkg, ref, "--plain-http", "--json")[1])["digest"]
    code, out, err = cli(capsys, "pull", ref, "-o", tmp_path / "got.tgsp", "--plain-http")
    assert code == 0, err
    assert f"v2 resolved to {digest}" in out and "VERIFIED" in out
    assert (tmp_path / "got.tgsp").read_bytes() == pkg.read_bytes()
    code, out, err = cli(capsys, "pull", ref, "-o", tmp_path / "got.tgsp", "--plain-http")
    assert code == 2 and "already exists" in err and "--force" in err
    assert cli(capsys, "pull", ref, "-o", tmp_path / "got.tgsp", "--plain-http", "--force")[0] == 0
    by_digest = f"oci://{registry.host}/tgflow/support@{digest}"
    code, out, err = cli(capsys, "pull", by_digest, "-o", tmp_path / "again.tgsp", "--plain-http", "--json",
                         "--route", "support", "--kind", "adapter")
    assert code == 0, err
    assert json.loads(out)["digest"] == digest


def test_an_untrusted_package_at_a_tag_is_refused_and_nothing_is_written(registry, world, capsys, tmp_path):
    stranger = Keyring(tmp_path / "stranger")
    stranger.generate("mallory", "signing", pp)
    pkg = world.package(5, signer=stranger.signer("mallory", pp))
    ref = f"oci://{registry.host}/tgflow/support:latest"
    assert cli(capsys, "push", pkg, ref, "--plain-http")[0] == 0
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    code, out, err = cli(capsys, "pull", ref, "-o", out_dir / "pkg.tgsp", "--plain-http")
    assert code == 1 and "no trusted signer" in err
    assert list(out_dir.iterdir()) == []  # no file, no temporary


def test_a_tampered_package_is_refused(registry, world, capsys, tmp_path):
    pkg = world.package(6)
    bad = tmp_path / "bad.tgsp"
    data = bytearray(pkg.read_bytes())
    data[len(data) // 2] ^= 0x01  # inside the encrypted payload: the registry stores it as given
    bad.write_bytes(bytes(data))
    ref = f"oci://{registry.host}/tgflow/support:v6"
    assert cli(capsys, "push", bad, ref, "--plain-http")[0] == 0
    code, out, err = cli(capsys, "pull", ref, "-o", tmp_path / "out.tgsp", "--plain-http")
    assert code == 1 and err.startswith("error: ")
    assert not (tmp_path / "out.tgsp").exists()


def test_mirror_into_a_layout_and_push_it_across_the_air_gap_with_referrers(registry, world, capsys, tmp_path):
    pkg = world.package(1)
    src = f"oci://{registry.host}/tgflow/support:v1"
    digest = json.loads(cli(capsys, "push", pkg, src, "--plain-http", "--json")[1])["digest"]
    layout = tmp_path / "carry"
    code, out, err = cli(capsys, "pull", src, "--to-layout", layout, "--plain-http", "--json")
    assert code == 0, err
    assert len(json.loads(out)["referrers"]) == 1
    index = json.loads((layout / "index.json").read_text())
    assert {m["digest"] for m in index["manifests"]} >= {digest}
    assert json.loads((layout / "oci-layout").read_text()) == {"imageLayoutVersion": "1.0.0"}
    registry.stop()  # the other side of the gap: the layout alone
    code, out, err = cli(capsys, "pull", f"oci-layout:{layout}:v1", "-o", tmp_path / "offline.tgsp")
    assert code == 0, err
    assert (tmp_path / "offline.tgsp").read_bytes() == pkg.read_bytes()
    from tests.oci.conftest import Registry

    other = Registry(tmp_path)
    try:
        code, out, err = cli(capsys, "push", f"oci-layout:{layout}:v1", f"oci://{other.host}/mirror/support:v1",
                             "--plain-http", "--json")
        assert code == 0, err
        assert json.loads(out)["digest"] == digest
        status, _, body = other.api(f"/v2/mirror/support/manifests/{digest.replace(':', '-')}",
                                    accept="application/vnd.oci.image.index.v1+json")
        assert status == 200 and len(json.loads(body)["manifests"]) == 1  # the evidence came along
    finally:
        other.stop()


def test_skopeo_reads_what_tgflow_pushed_and_tgflow_reads_what_skopeo_wrote(registry, world, capsys, tmp_path):
    if shutil.which("skopeo") is None:
        pytest.fail("skopeo is not installed (apt-get install skopeo; .ci/run does)")
    pkg = world.package(4)
    ref = f"oci://{registry.host}/tgflow/support:v4"
    digest = json.loads(cli(capsys, "push", pkg, ref, "--plain-http", "--json")[1])["digest"]
    raw = subprocess.run(["skopeo", "inspect", "--raw", "--tls-verify=false", f"docker://{registry.host}/tgflow/support:v4"],
                         check=True, capture_output=True).stdout
    assert "sha256:" + hashlib.sha256(raw).hexdigest() == digest
    subprocess.run(["skopeo", "copy", "--src-tls-verify=false", f"docker://{registry.host}/tgflow/support:v4",
                    f"oci:{tmp_path / 'sk'}:v4"], check=True, capture_output=True)
    code, out, err = cli(capsys, "pull", f"oci-layout:{tmp_path / 'sk'}:v4", "-o", tmp_path / "via-skopeo.tgsp")
    assert code == 0, err
    assert (tmp_path / "via-skopeo.tgsp").read_bytes() == pkg.read_bytes()


def test_large_packages_upload_in_resumable_chunks(registry, world, monkeypatch, capsys, tmp_path):
    """A chunk size far below the package, and a proxy that drops the connection in the middle of
    the second chunk once: the upload resumes from the registry's Range and the layer is intact."""
    from runners.oci import registry as R
    from tests.oci.proxy import DroppingProxy

    monkeypatch.setattr(R, "CHUNK", 64 << 10)
    pkg = world.package(7, weights=600_000)
    with DroppingProxy(registry.port, drop_on_nth_patch=2) as proxy:
        code, out, err = cli(capsys, "push", pkg, f"oci://127.0.0.1:{proxy.port}/big/support:v7", "--plain-http", "--json")
        assert code == 0, err
        assert proxy.dropped == 1 and proxy.patches >= 9  # 600 KB in 64 KiB chunks, one sent again
    status, _, body = registry.api("/v2/big/support/manifests/v7")
    layer = json.loads(body)["layers"][0]
    assert layer["digest"] == "sha256:" + _sha(pkg)
    code, out, err = cli(capsys, "pull", f"oci://{registry.host}/big/support:v7", "-o", tmp_path / "big.tgsp",
                         "--plain-http")
    assert code == 0, err
    assert _sha(tmp_path / "big.tgsp") == _sha(pkg)


def test_bad_references_are_usage_errors(world, capsys, tmp_path):
    for ref, why in (("oci://", "needs a host"), ("oci://h/UPPER:tag", "not a valid OCI repository"),
                     ("oci://h/r:bad tag", "printable"), ("oci://h/r@sha256:abc", "not sha256"),
                     ("http://h/r:tag", "not an OCI reference")):
        code, out, err = cli(capsys, "pull", ref, "-o", tmp_path / "x.tgsp")
        assert code == 2 and why in err, (ref, err)
    code, out, err = cli(capsys, "pull", "oci://127.0.0.1:1/r", "-o", tmp_path / "x.tgsp")
    assert code == 2 and "names no tag or digest" in err
