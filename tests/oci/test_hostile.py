"""A hostile registry: a local HTTP server that answers the distribution API with what an
attacker, a broken proxy or a buggy registry would send. Each gets one clear line, a
documented exit code, and no file."""

from __future__ import annotations

import hashlib
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from runners.oci import artifact

from tests.helpers import cli

REPO = "/v2/evil/pkg"


class _Quiet(ThreadingHTTPServer):
    def handle_error(self, request, client_address):  # the client hung up on a lie: expected
        pass


class Hostile:
    """Serves one package artifact; ``mode`` decides how it lies."""

    def __init__(self, package: bytes, mode: str) -> None:
        self.package, self.mode, self.seen = package, mode, []
        layer = artifact.descriptor(artifact.PACKAGE_LAYER, "sha256:" + hashlib.sha256(package).hexdigest(), len(package))
        doc = json.loads(artifact.manifest(artifact.PACKAGE, layer, {}))
        if mode == "two-layers":
            doc["layers"].append(layer)
        if mode == "wrong-type":
            doc["artifactType"] = "application/vnd.oci.image.config.v1+json"
        if mode == "wrong-layer-type":
            doc["layers"][0]["mediaType"] = "application/vnd.oci.image.layer.v1.tar+gzip"
        self.manifest = json.dumps(doc).encode()
        self.digest = "sha256:" + hashlib.sha256(self.manifest).hexdigest()
        owner = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):
                pass

            def do_GET(self):
                owner.seen.append((self.path, self.headers.get("Authorization")))
                owner.answer(self)

            do_HEAD = do_GET

        self.server = _Quiet(("127.0.0.1", 0), Handler)
        self.host = f"127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def answer(self, h) -> None:
        mode, path = self.mode, h.path
        if path.startswith("/token?"):
            return self.send(h, 200, json.dumps({"token": "tok-123"}).encode(), "application/json")
        if mode in ("basic-401", "bearer") and h.headers.get("Authorization") != "Bearer tok-123":
            challenge = ('Basic realm="evil"' if mode == "basic-401" else
                         f'Bearer realm="http://{self.host}/token",service="evil",scope="repository:evil/pkg:pull"')
            return self.send(h, 401, b'{"errors":[{"code":"UNAUTHORIZED"}]}', "application/json",
                             {"WWW-Authenticate": challenge})
        if path.startswith(f"{REPO}/manifests/"):
            return self.manifest_answer(h)
        if path.startswith(f"{REPO}/blobs/"):
            return self.blob_answer(h)
        self.send(h, 404, b"{}", "application/json")

    def manifest_answer(self, h) -> None:
        mode = self.mode
        if mode == "redirect":
            return self.send(h, 307, b"", "text/plain", {"Location": "http://localhost:1/v2/evil/pkg/manifests/x"})
        if mode == "error-markup":
            body = json.dumps({"errors": [{"code": "\x1b[31m[bold]EVIL", "message": "\x1b]8;;http://x\x07"}]}).encode()
            return self.send(h, 400, body, "application/json")
        if mode == "huge-declared":
            h.send_response(200)
            h.send_header("Content-Type", artifact.MANIFEST)
            h.send_header("Content-Length", str(2 << 30))
            h.end_headers()
            h.wfile.write(b"{" * 1024)
            return
        if mode == "huge-streamed":
            h.send_response(200)
            h.send_header("Content-Type", artifact.MANIFEST)
            h.send_header("Connection", "close")
            h.end_headers()
            for _ in range(5 * 16):
                h.wfile.write(b" " * 65536)
            h.close_connection = True
            return
        said = "sha256:" + "0" * 64 if mode == "digest-header" else self.digest
        self.send(h, 200, self.manifest, artifact.MANIFEST, {"Docker-Content-Digest": said})

    def blob_answer(self, h) -> None:
        mode, data = self.mode, self.package
        if mode == "blob-redirect":
            return self.send(h, 307, b"", "text/plain", {"Location": "http://localhost:1/blob"})
        if mode == "wrong-blob":
            data = bytearray(data)
            data[100] ^= 1
        if mode == "drop-mid-blob":
            h.send_response(200)
            h.send_header("Content-Length", str(len(data)))
            h.end_headers()
            h.wfile.write(data[: len(data) // 2])
            h.wfile.flush()
            h.close_connection = True
            return
        self.send(h, 200, bytes(data), "application/octet-stream")

    @staticmethod
    def send(h, status: int, body: bytes, ctype: str, headers: dict | None = None) -> None:
        h.send_response(status)
        h.send_header("Content-Type", ctype)
        h.send_header("Content-Length", str(len(body)))
        for k, v in (headers or {}).items():
            h.send_header(k, v)
        h.end_headers()
        if h.command != "HEAD":
            h.wfile.write(body)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def hostile(world):
    made = []

    def make(mode: str) -> Hostile:
        made.append(Hostile(world.package(1).read_bytes(), mode))
        return made[-1]

    yield make
    for h in made:
        h.close()


CASES = [
    ("two-layers", 1, "must have exactly one layer (it has 2 layers)"),
    ("wrong-type", 1, "artifact, not application/vnd.tgflow.package.v1"),
    ("wrong-layer-type", 1, "layer is 'application/vnd.oci.image.layer.v1.tar+gzip'"),
    ("digest-header", 1, "but the registry says sha256:0000"),
    ("wrong-blob", 1, "the manifest says"),
    ("huge-declared", 1, "over the 4194304-byte limit"),
    ("huge-streamed", 1, "over the 4194304-byte limit"),
    ("drop-mid-blob", 7, "dropped the connection"),
    ("basic-401", 6, "needs credentials and none were found"),
    ("redirect", 1, "redirected manifest 127.0.0.1"),
    ("blob-redirect", 1, "to another host (localhost:1); refused"),
    ("error-markup", 1, "the registry refused it (400)"),
]


@pytest.mark.parametrize("mode,code,says", CASES, ids=[c[0] for c in CASES])
def test_a_hostile_registry_gets_a_clear_error_and_leaves_no_file(hostile, capsys, tmp_path, mode, code, says):
    server = hostile(mode)
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    got, out, err = cli(capsys, "pull", f"oci://{server.host}/evil/pkg:v1", "-o", out_dir / "pkg.tgsp", "--plain-http")
    assert got == code, err
    assert says in err, err
    assert err.startswith("error: ") and "internal error" not in err and "\x1b" not in err and "[bold]" not in err
    assert list(out_dir.iterdir()) == []


def test_a_redirect_never_carries_credentials_to_another_host(hostile, capsys, tmp_path, monkeypatch):
    server = hostile("blob-redirect")
    monkeypatch.setenv("TGFLOW_REGISTRY_PASSWORD", "hunter2")
    got, out, err = cli(capsys, "pull", f"oci://{server.host}/evil/pkg:v1", "-o", tmp_path / "p.tgsp", "--plain-http",
                        "--username", "u")
    assert got == 1 and "hunter2" not in out + err


def test_bearer_tokens_from_the_registry_s_token_service(hostile, capsys, tmp_path):
    server = hostile("bearer")
    got, out, err = cli(capsys, "pull", f"oci://{server.host}/evil/pkg:v1", "-o", tmp_path / "p.tgsp", "--plain-http")
    assert got == 0, err
    assert (tmp_path / "p.tgsp").is_file()
    assert ("/token?service=evil&scope=repository%3Aevil%2Fpkg%3Apull", None) in server.seen
    assert all(auth == "Bearer tok-123" for path, auth in server.seen[2:] if path.startswith("/v2/"))
