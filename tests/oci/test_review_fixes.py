"""What an outside review of the OCI code found, each pinned by a test: an editor never re-signs
a replayed index (folder or OCI), credentials never go in clear to another host's token
service, hostile tag lists and layouts are bounded, and odd input is a clear error."""

from __future__ import annotations

import json
import shutil

import pytest

from runners.oci.client import Access
from runners.oci.refs import parse as parse_ref
from runners.state.oci_backend import OciBackend

from tests.helpers import cli
from tests.oci.test_hostile import Hostile


def test_an_editor_refuses_to_re_sign_a_replayed_index_on_oci(registry, world, capsys):
    r, sign = ["--registry", f"oci://{registry.host}/routes", "--plain-http"], ["--signing-key", "release"]
    assert cli(capsys, "route", "register", world.package(1), *r, *sign, "--alias", "production")[0] == 0
    backend = OciBackend(parse_ref(f"oci://{registry.host}/routes"), Access(plain_http=True))
    old_raw, media, _ = backend.repo.get_manifest("index-support")
    assert cli(capsys, "route", "register", world.package(2), *r, *sign, "--alias", "production")[0] == 0
    backend.repo.put_manifest(old_raw, media, "index-support")  # push rights, no signing key
    code, out, err = cli(capsys, "route", "register", world.package(3), *r, *sign)
    assert code == 1 and "a replayed index; not editing it" in err and "route-editors.json" in err
    code, out, err = cli(capsys, "route", "promote", "support", "1", *r, *sign)
    assert code == 1 and "replayed" in err


def test_an_editor_refuses_to_re_sign_a_replayed_index_in_a_folder(world, capsys, tmp_path):
    r, sign = ["--registry", tmp_path / "reg"], ["--signing-key", "release"]
    assert cli(capsys, "route", "register", world.package(1), *r, *sign, "--alias", "production")[0] == 0
    index = tmp_path / "reg" / "routes" / "support" / "index.json"
    old = index.read_bytes()
    assert cli(capsys, "route", "register", world.package(2), *r, *sign, "--alias", "production")[0] == 0
    index.write_bytes(old)  # someone with write access to the folder puts the old index back
    code, out, err = cli(capsys, "route", "register", world.package(3), *r, *sign)
    assert code == 1 and "a replayed index; not editing it" in err
    # an operator who checked the history re-signs it on purpose
    code, out, err = cli(capsys, "route", "refresh", "support", *r, *sign, "--revive")
    assert code == 0, err


def test_credentials_never_go_in_clear_to_another_host_s_token_service(world, capsys, tmp_path, monkeypatch):
    server = Hostile(world.package(1).read_bytes(), "bearer")
    other = Hostile(b"x", "plain")
    try:
        server.mode = "bearer-elsewhere"
        server.answer = _bearer_elsewhere(server, other.host)
        monkeypatch.setenv("TGFLOW_REGISTRY_PASSWORD", "hunter2")
        code, out, err = cli(capsys, "pull", f"oci://{server.host}/evil/pkg:v1", "-o", tmp_path / "p.tgsp",
                             "--plain-http", "--username", "ci")
        assert code == 6 and "not an HTTPS URL" in err
        assert other.seen == []  # nothing, let alone a password, reached the other host
    finally:
        server.close()
        other.close()


def _bearer_elsewhere(server, other_host):
    def answer(h):
        server.seen.append((h.path, h.headers.get("Authorization")))
        challenge = f'Bearer realm="http://{other_host}/token",service="x",scope="repository:evil/pkg:pull"'
        server.send(h, 401, b"{}", "application/json", {"WWW-Authenticate": challenge})
    return answer


def test_a_tag_list_that_loops_is_cut_off(world, capsys):
    server = Hostile(b"x", "plain")

    def answer(h):
        body = json.dumps({"name": "evil/pkg", "tags": [f"index-r{i}" for i in range(50)]}).encode()
        server.send(h, 200, body, "application/json", {"Link": '</v2/evil/pkg/tags/list?n=1000>; rel="next"'})

    server.answer = answer
    try:
        code, out, err = cli(capsys, "route", "list", "--registry", f"oci://{server.host}/evil/pkg", "--plain-http",
                             "--json")
        assert code in (0, 1) and "internal error" not in err
        assert len([p for p in server.seen if p[0].startswith("/v2/evil/pkg/tags/list")]) <= 2
    finally:
        server.close()


def test_layouts_refuse_links_and_foreign_folders(world, capsys, tmp_path):
    pkg = world.package(1)
    layout = tmp_path / "layout"
    assert cli(capsys, "push", pkg, f"oci-layout:{layout}:v1")[0] == 0
    elsewhere = tmp_path / "elsewhere"
    shutil.move(layout / "blobs", elsewhere)
    (layout / "blobs").symlink_to(elsewhere)
    code, out, err = cli(capsys, "pull", f"oci-layout:{layout}:v1", "-o", tmp_path / "x.tgsp")
    assert code == 1 and "is a link or not a folder" in err
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "index.json").write_text('{"mine": true}')
    code, out, err = cli(capsys, "push", pkg, f"oci-layout:{foreign}:v1")
    assert code == 2 and "not an OCI image layout" in err
    assert (foreign / "index.json").read_text() == '{"mine": true}'


@pytest.mark.parametrize("index", [{"schemaVersion": 2, "manifests": {"a": 1}},
                                   {"schemaVersion": 2, "manifests": [{"mediaType": "x", "digest": "sha256:" + "0" * 64,
                                                                       "size": 1, "annotations": ["x"]}]}])
def test_a_malformed_layout_index_is_a_clear_error(world, capsys, tmp_path, index):
    layout = tmp_path / "layout"
    assert cli(capsys, "push", world.package(1), f"oci-layout:{layout}:v1")[0] == 0
    (layout / "index.json").write_text(json.dumps(index))
    code, out, err = cli(capsys, "pull", f"oci-layout:{layout}:v1", "-o", tmp_path / "x.tgsp")
    assert code == 1 and "internal error" not in err and err.startswith("error: ")


def test_odd_tokens_and_limits_are_clear_errors(world, capsys, tmp_path, monkeypatch):
    server = Hostile(world.package(1).read_bytes(), "bearer")
    real = server.answer

    def answer(h):
        if h.path.startswith("/token?"):
            return server.send(h, 200, json.dumps({"token": "té"}).encode(), "application/json")
        return real(h)

    server.answer = answer
    try:
        code, out, err = cli(capsys, "pull", f"oci://{server.host}/evil/pkg:v1", "-o", tmp_path / "p.tgsp",
                             "--plain-http")
        assert code == 6 and "no usable token" in err
    finally:
        server.close()
    monkeypatch.setenv("TGFLOW_PULL_MAX_BYTES", "²")
    code, out, err = cli(capsys, "pull", "oci://127.0.0.1:1/r:v1", "-o", tmp_path / "p.tgsp")
    assert code == 2 and "TGFLOW_PULL_MAX_BYTES" in err


def test_a_registry_with_the_referrers_api_is_asked_through_it(world):
    """distribution 2.8 has no Referrers API (the other tests use the tag fallback); a registry
    that has one answers GET /v2/<name>/referrers/<digest> with an image index, read as such."""
    from runners.oci.client import Http
    from runners.oci.registry import Repository

    server = Hostile(b"x", "plain")
    subject = "sha256:" + "a" * 64
    ref = {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": "sha256:" + "b" * 64, "size": 700,
           "artifactType": "application/vnd.tgflow.evidence.v1+jsonl"}

    def answer(h):
        if h.path == f"/v2/evil/pkg/referrers/{subject}":
            body = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
                               "manifests": [ref]}).encode()
            return server.send(h, 200, body, "application/vnd.oci.image.index.v1+json")
        server.send(h, 404, b"{}", "application/json")

    server.answer = answer
    try:
        with Http(server.host, Access(plain_http=True)) as http:
            assert Repository(http, "evil/pkg").referrers(subject) == [ref]
        assert not any("sha256-" in path for path, _ in server.seen)  # the fallback tag was not asked for
    finally:
        server.close()


def test_an_editor_refuses_to_start_over_on_a_deleted_index(world, capsys, tmp_path):
    r, sign = ["--registry", tmp_path / "reg"], ["--signing-key", "release"]
    for v in (1, 2):
        assert cli(capsys, "route", "register", world.package(v), *r, *sign, "--alias", "production")[0] == 0
    (tmp_path / "reg" / "routes" / "support" / "index.json").unlink()  # no key needed to delete a file
    code, out, err = cli(capsys, "route", "register", world.package(3), *r, *sign)
    assert code == 1 and "the index was deleted or the registry replaced" in err
    assert not (tmp_path / "reg" / "routes" / "support" / "index.json").exists()


def test_one_registry_has_one_pin_whatever_its_host_is_spelled(registry, world):
    from runners.state.registry import at

    names = {at(f"oci://{h}/routes", world.kr.trust_policy(), access=Access(plain_http=True))._key()
             for h in ("reg.example", "REG.example", "reg.example:443")}
    assert names == {"oci://reg.example/routes"}


def test_mirroring_again_repairs_a_damaged_blob_in_the_layout(world, capsys, tmp_path):
    pkg = world.package(1)
    src = tmp_path / "src"
    assert cli(capsys, "push", pkg, f"oci-layout:{src}:v1")[0] == 0
    dst = tmp_path / "dst"
    assert cli(capsys, "pull", f"oci-layout:{src}:v1", "--to-layout", dst)[0] == 0
    import hashlib

    blob = dst / "blobs" / "sha256" / hashlib.sha256(pkg.read_bytes()).hexdigest()
    blob.write_bytes(b"not a package")
    assert cli(capsys, "pull", f"oci-layout:{src}:v1", "--to-layout", dst)[0] == 0
    assert blob.read_bytes() == pkg.read_bytes()  # written again, not taken on its name
    code, out, err = cli(capsys, "pull", f"oci-layout:{dst}:v1", "-o", tmp_path / "again.tgsp")
    assert code == 0, err
