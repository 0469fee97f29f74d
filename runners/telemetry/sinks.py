"""Where a round's public view goes: each configured sink, one after another. A sink that
fails prints one warning and the round's exit code is unchanged; nothing is sent to a
sink that was not configured (air-gapped machines see no traffic by default)."""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Protocol

from . import prom
from .record import Public, RoundRecord, public


@dataclass(frozen=True)
class Settings:
    metrics_file: Path | None = None
    pushgateway: str | None = None
    push_username: str | None = None
    push_password: str | None = field(default=None, repr=False)
    mlflow: str | None = None
    otlp_traces: str | None = None  # the full OTLP/HTTP traces URL
    traceparent: str | None = None  # W3C trace context of the caller (TRACEPARENT)

    def sinks(self) -> list["Sink"]:
        out: list[Sink] = []
        if self.metrics_file:
            out.append(Textfile(self.metrics_file))
        if self.pushgateway:
            out.append(Pushgateway(self.pushgateway, self.push_username, self.push_password))
        if self.mlflow:
            out.append(Mlflow(self.mlflow))
        if self.otlp_traces:
            out.append(Otlp(self.otlp_traces, self.traceparent))
        return out


@dataclass(frozen=True)
class Sent:
    """What a sink is handed besides the public view."""

    artifacts: dict[str, str]  # MLflow artifacts: name -> text (model card, evidence summary)
    version: str  # tgflow's


class Sink(Protocol):
    name: str
    deadline: float  # seconds the round waits for it, whatever its library's own timeouts do

    def send(self, p: Public, sent: Sent) -> str | None:  # a note for the operator, or None
        ...


@dataclass(frozen=True)
class Textfile:
    path: Path
    name: str = "the metrics file"
    deadline: float = 20.0  # seconds, all in: the lock's wait, the read, the write

    def send(self, p: Public, sent: Sent) -> str | None:
        return prom.write_textfile(self.path, p)


@dataclass(frozen=True)
class Pushgateway:
    url: str
    username: str | None
    password: str | None = field(repr=False)
    name: str = "the Pushgateway"
    deadline: float = 15.0

    def send(self, p: Public, sent: Sent) -> str | None:
        prom.push(self.url, p, username=self.username, password=self.password)
        return None


@dataclass(frozen=True)
class Mlflow:
    uri: str
    name: str = "MLflow"
    deadline: float = 60.0

    def send(self, p: Public, sent: Sent) -> str | None:
        from . import tracking

        tracking.log_run(self.uri, p, sent.artifacts)
        return None


@dataclass(frozen=True)
class Otlp:
    endpoint: str
    traceparent: str | None
    name: str = "the OTLP collector"
    deadline: float = 15.0

    def send(self, p: Public, sent: Sent) -> str | None:
        from . import traces

        traces.send(self.endpoint, p, traceparent=self.traceparent, service_version=sent.version)
        return None


_USERINFO = re.compile(r"(//)[^/\s]*@")  # up to the last @ before the host: a password may hold one


def _why(exc: BaseException) -> str:
    """One line, no credentials: a URL's user:password@ is masked, whatever the library printed."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    return _USERINFO.sub(r"\1***@", text)[:240]


def _bounded(sink: Sink, p: Public, sent: Sent) -> str | None:
    """The sink's send in a daemon thread, waited for at most its deadline: a server that trickles
    bytes or asks for a retry hours later cannot hold the round (the process may exit under it)."""
    box: dict = {}

    def run() -> None:
        try:
            box["note"] = sink.send(p, sent)
        except BaseException as exc:  # handed to the caller, which warns
            box["error"] = exc

    worker = threading.Thread(target=run, name=f"tgflow-telemetry-{sink.name}", daemon=True)
    worker.start()
    worker.join(sink.deadline)
    if worker.is_alive():
        raise TimeoutError(f"no answer within {sink.deadline:g} s")
    if "error" in box:
        raise box["error"]
    return box.get("note")


def emit(rec: RoundRecord, settings: Settings, sent: Sent, warn: Callable[[str], None]) -> None:
    p = public(rec)
    for sink in settings.sinks():
        try:
            note = _bounded(sink, p, sent)
        except Exception as exc:  # telemetry never breaks a round
            warn(f"telemetry: {sink.name} was not updated ({_why(exc)}); the round's exit code is unchanged")
            continue
        if note:
            warn(f"telemetry: {note}")
