"""Real telemetry receivers: Debian's prometheus-pushgateway, an OTLP/HTTP receiver, a local MLflow store."""

from __future__ import annotations

import shutil
import subprocess
import threading
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from tests.helpers import free_port, port_open  # noqa: F401  (free_port: imported from here by the tests)
from tests.runners.conftest import tiny_model, workspace  # noqa: F401  (fixtures)

PUSHGATEWAY = shutil.which("prometheus-pushgateway")


class Gateway:
    def __init__(self, tmp, web_config: str | None = None):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        cmd = [PUSHGATEWAY, f"--web.listen-address=127.0.0.1:{self.port}", "--persistence.file=" + str(tmp / "pg.data")]
        if web_config:
            (tmp / "web.yml").write_text(web_config)
            cmd.append(f"--web.config.file={tmp / 'web.yml'}")
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        if not port_open(self.port):
            self.proc.kill()
            raise RuntimeError("prometheus-pushgateway did not start")

    def metrics(self, auth: tuple[str, str] | None = None) -> str:
        req = urllib.request.Request(self.url + "/metrics")
        if auth:
            import base64

            req.add_header("Authorization", "Basic " + base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode())
        return urllib.request.urlopen(req, timeout=5).read().decode()

    def stop(self):
        self.proc.terminate()
        self.proc.wait(10)


@pytest.fixture
def gateway(tmp_path):
    if PUSHGATEWAY is None:
        pytest.fail("prometheus-pushgateway is not installed (apt-get install prometheus-pushgateway; .ci/run does)")
    g = Gateway(tmp_path)
    yield g
    g.stop()


class Receiver:
    """An OTLP/HTTP traces endpoint: keeps each decoded ExportTraceServiceRequest."""

    def __init__(self):
        from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

        self.requests: list = []
        received = self.requests

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                req = ExportTraceServiceRequest()
                req.ParseFromString(body)
                received.append((self.path, req))
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def spans(self) -> list:
        return [s for _, r in self.requests for rs in r.resource_spans for ss in rs.scope_spans for s in ss.spans]


@pytest.fixture
def receiver():
    r = Receiver()
    yield r
    r.server.shutdown()
