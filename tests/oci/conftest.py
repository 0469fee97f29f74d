"""Real registries for the OCI tests: Debian's docker-registry (distribution 2.8), started by the
test on a free port from a config in its temporary folder; plain HTTP, or htpasswd auth over
TLS with a self-signed certificate made here. And the keys and packages the tests push."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

import tgsp
from tgsp.keyring import Keyring

from tests.helpers import PASS, free_port, make_adapter, port_open, pp

DOCKER_REGISTRY = shutil.which("docker-registry")
USER, PASSWORD = "ci-bot", "s3cret-Pa55-not-in-output"


class Registry:
    """One docker-registry process; ``host`` is 127.0.0.1:PORT."""

    def __init__(self, tmp: Path, *, secure: bool = False, port: int | None = None) -> None:
        if DOCKER_REGISTRY is None:
            pytest.fail("docker-registry is not installed (apt-get install docker-registry; .ci/run does)")
        self.port = port or free_port()
        self.host = f"127.0.0.1:{self.port}"
        self.dir = tmp / f"registry-{self.port}"
        self.dir.mkdir()
        config = ["version: 0.1", "log:", "  level: error", "storage:", "  filesystem:",
                  f"    rootdirectory: {self.dir / 'data'}", "  delete:", "    enabled: true", "http:",
                  f"  addr: 127.0.0.1:{self.port}"]
        self.ca = None
        if secure:
            self.ca = self._certificate()
            config += ["  tls:", f"    certificate: {self.dir / 'cert.pem'}", f"    key: {self.dir / 'key.pem'}",
                       "auth:", "  htpasswd:", "    realm: tgflow-test", f"    path: {self._htpasswd()}"]
        (self.dir / "config.yml").write_text("\n".join(config) + "\n")
        self.proc = subprocess.Popen([DOCKER_REGISTRY, "serve", str(self.dir / "config.yml")],
                                     stdout=subprocess.DEVNULL, stderr=open(self.dir / "log", "wb"))
        self._wait()

    def _certificate(self) -> Path:
        subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=localhost",
                        "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1", "-keyout", str(self.dir / "key.pem"),
                        "-out", str(self.dir / "cert.pem")], check=True, capture_output=True)
        return self.dir / "cert.pem"

    def _htpasswd(self) -> Path:
        line = subprocess.run(["htpasswd", "-Bbn", USER, PASSWORD], check=True, capture_output=True, text=True).stdout
        (self.dir / "htpasswd").write_text(line)
        return self.dir / "htpasswd"

    def _wait(self) -> None:
        if port_open(self.port):
            return
        self.stop()
        raise RuntimeError("docker-registry did not start: " + (self.dir / "log").read_text()[-500:])

    def api(self, path: str, accept: str = "application/vnd.oci.image.manifest.v1+json"):
        """GET on the registry's own HTTP API (plain registries), with httpx: (status, headers, body)."""
        import httpx

        r = httpx.get(f"http://{self.host}{path}", headers={"Accept": accept}, timeout=10)
        return r.status_code, r.headers, r.content

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


@pytest.fixture
def registry(tmp_path):
    r = Registry(tmp_path)
    yield r
    r.stop()


@pytest.fixture
def secure_registry(tmp_path):
    r = Registry(tmp_path, secure=True)
    yield r
    r.stop()


class World:
    """A keyring (release signs and is trusted, as its own key; operator decrypts) and adapter packages."""

    def __init__(self, tmp: Path) -> None:
        self.tmp, self.home = tmp, tmp / "home"
        self.kr = Keyring(self.home)
        self.kr.generate("release", "signing", pp)
        self.kr.generate("operator", "recipient", pp)
        self.signer = self.kr.signer("release", pp)

    def package(self, version: int = 1, route: str = "support", *, signer=None, weights: int = 50_000,
                src: Path | None = None) -> Path:
        src = src or make_adapter(self.tmp / f"src-{route}-{version}", seed=version, weights=weights)
        out = self.tmp / f"{route}-v{version}.tgsp"
        tgsp.build(src, out, route=route, version=version, kind="adapter",
                   recipients=[self.kr.public_file("operator").key], signers=[signer or self.signer])
        return out


@pytest.fixture
def world(tmp_path, monkeypatch):
    monkeypatch.setenv("TGFLOW_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("TGFLOW_PASSPHRASE", PASS)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "docker"))  # never the machine's own credentials
    for name in ("TGFLOW_REGISTRY_USERNAME", "TGFLOW_REGISTRY_PASSWORD", "TGFLOW_REGISTRY_PLAIN_HTTP",
                 "TGFLOW_REGISTRY_CA_FILE", "REGISTRY_AUTH_FILE", "TGFLOW_CACHE"):
        monkeypatch.delenv(name, raising=False)
    return World(tmp_path)
