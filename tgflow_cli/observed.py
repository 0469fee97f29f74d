"""Telemetry for the round commands (peft run, fed aggregate, fed decrypt): their options,
the settings from flags, the environment and config.toml, and ``observed``, which times
the round and hands its record to the sinks (runners/telemetry/) however it ends."""

from __future__ import annotations

import contextlib
import json
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Optional

import typer

from runners import outcomes
from runners.telemetry import observe, sinks
from runners.telemetry.record import RoundRecord
from tgsp.errors import InputError

from .common import config
from .term import warn

MetricsFile = typer.Option(None, "--metrics-file", metavar="PATH", envvar="TGFLOW_METRICS_FILE", dir_okay=False,
                           help="Write the round's metrics to this Prometheus textfile, atomically (node_exporter's textfile collector); also [metrics] file. See docs/observability.md.")
Pushgateway = typer.Option(None, "--pushgateway", metavar="URL", envvar="TGFLOW_PUSHGATEWAY",
                           help="Push the same metrics to this Prometheus Pushgateway (job tgflow, grouped by route); basic auth from TGFLOW_PUSHGATEWAY_USERNAME and TGFLOW_PUSHGATEWAY_PASSWORD(_FILE); also [metrics] pushgateway.")
Mlflow = typer.Option(None, "--mlflow", metavar="TRACKING_URI", envvar="TGFLOW_MLFLOW",
                      help="Log the round as an MLflow run in an experiment named after the route (pip install 'tgflow[tracking]'); also [tracking] mlflow.")
Otlp = typer.Option(None, "--otlp-endpoint", metavar="URL",
                    help="Send one OpenTelemetry trace per round over OTLP/HTTP to URL/v1/traces (pip install 'tgflow[otel]'); also OTEL_EXPORTER_OTLP_ENDPOINT and [tracking] otlp_endpoint.")



def settings(metrics_file: Optional[Path], pushgateway: Optional[str], mlflow: Optional[str],
             otlp: Optional[str]) -> sinks.Settings:
    """Flags (and their environment variables) first, then config.toml; checked before the round starts."""
    cfg = config()
    path = metrics_file or (Path(cfg.get("metrics", "file")) if cfg.get("metrics", "file") else None)
    gateway = pushgateway or cfg.get("metrics", "pushgateway")
    tracking = mlflow or cfg.get("tracking", "mlflow")
    traces = _traces_url(otlp) or _env_traces() or _traces_url(cfg.get("tracking", "otlp_endpoint"))
    if path is not None:
        _check_textfile(path)
    for name, url in (("--pushgateway", gateway), ("--otlp-endpoint", traces)):
        if url:
            _check_url(name, url)
    if tracking and re.match(r"[A-Za-z][A-Za-z0-9+.-]*://[^/]*@", tracking):
        raise InputError("--mlflow: credentials in the tracking URI are refused (they would show in logs)",
                         hint="set MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD (or the store's own "
                              "environment) instead")
    if tracking:
        _need("tracking")
    if traces:
        traces = _traces_if_installed(traces, chosen_here=bool(otlp or not _env_traces()))
    user, password = _push_auth(cfg) if gateway else (None, None)
    return sinks.Settings(path, gateway, user, password, tracking, traces, os.environ.get("TRACEPARENT") or None)


def _traces_url(base: Optional[str]) -> Optional[str]:
    """The flag and config take a base URL, as OTEL_EXPORTER_OTLP_ENDPOINT does."""
    if not base:
        return None
    return base if base.rstrip("/").endswith("/v1/traces") else base.rstrip("/") + "/v1/traces"


def _env_traces() -> Optional[str]:
    """OpenTelemetry's own variables: the _TRACES_ one is the full URL."""
    return os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or _traces_url(os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT"))


def _check_url(name: str, url: str) -> None:
    if not re.match(r"https?://[^\s/]", url):
        raise InputError(f"{name} must be an http:// or https:// URL", hint="for example http://pushgateway:9091")
    if re.match(r"https?://[^/]*@", url):
        raise InputError(f"{name}: credentials in the URL are refused (they would show in logs)",
                         hint="use TGFLOW_PUSHGATEWAY_USERNAME and TGFLOW_PUSHGATEWAY_PASSWORD_FILE, or "
                              "OTEL_EXPORTER_OTLP_HEADERS")


def _check_textfile(path: Path) -> None:
    import stat

    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        mode = None
    except OSError as exc:
        raise InputError(f"--metrics-file {path}: {exc.strerror}") from None
    if mode is not None and not stat.S_ISREG(mode):
        raise InputError(f"--metrics-file {path} is not a regular file (a link, a FIFO, a folder?)",
                         hint="point at a plain *.prom file, or at a path where none exists yet")
    if not path.parent.is_dir():
        raise InputError(f"--metrics-file: the folder {path.parent} does not exist",
                         hint="create it, or point at node_exporter's --collector.textfile.directory")
    if path.suffix != ".prom":
        raise InputError(f"--metrics-file {path.name}: node_exporter's textfile collector reads only *.prom files",
                         hint=f"name it {path.stem}.prom")


def _traces_if_installed(url: str, *, chosen_here: bool) -> Optional[str]:
    """A flag or config.toml that asks for traces without the extra stops the round (exit 2); an
    OTEL_EXPORTER_OTLP_* variable set for the whole cluster only warns, and the round runs."""
    try:
        _need("otel")
    except InputError as exc:
        if chosen_here:
            raise
        warn(f"telemetry: OTEL_EXPORTER_OTLP_ENDPOINT is set but no traces are sent: {exc} "
             f"(pip install 'tgflow[otel]')")
        return None
    return url


def _need(name: str) -> None:
    """Stop before the round when the extra a setting needs is missing (tgflow_cli/extras.py)."""
    from . import extras

    extra = extras.named(name)
    if not extras.present(extra)["installed"]:
        raise InputError(f"{extra.feature} needs the optional extra {name!r}, which is not installed",
                         hint=f"pip install 'tgflow[{name}]'")


def _push_auth(cfg) -> tuple[Optional[str], Optional[str]]:
    user = os.environ.get("TGFLOW_PUSHGATEWAY_USERNAME") or cfg.get("metrics", "pushgateway_username")
    password = os.environ.get("TGFLOW_PUSHGATEWAY_PASSWORD")
    file = os.environ.get("TGFLOW_PUSHGATEWAY_PASSWORD_FILE") or cfg.get("metrics", "pushgateway_password_file")
    if password is None and file:
        from tgsp.inputfile import read_input

        password = read_input(Path(file), "Pushgateway password file", max_bytes=4096).decode("utf-8", "replace").strip()
    if user and not password:
        raise InputError("a Pushgateway username is set but no password",
                         hint="set TGFLOW_PUSHGATEWAY_PASSWORD_FILE (or TGFLOW_PUSHGATEWAY_PASSWORD)")
    if password and not user:
        raise InputError("a Pushgateway password is set but no username", hint="set TGFLOW_PUSHGATEWAY_USERNAME")
    return user, password


@dataclass
class Ending:
    """Set by the command when its round returns: its RoundResult."""

    result: Any = None


@contextlib.contextmanager
def observed(command: str, spec_path: Path, chosen: sinks.Settings, *, skip_ok: bool = False) -> Iterator[Ending]:
    """Time the round run inside, then send its record to every configured sink, however it ends.
    Only rank 0 reports (the other ranks of a torchrun round return as followers). The spec is read
    as the round starts, so what the round was (DP or not) is what it opened."""
    ending = Ending()
    if not chosen.sinks() or os.environ.get("RANK", "0") not in ("", "0"):
        yield ending
        return
    started, (spec, route) = time.time(), _spec_of(spec_path)
    with observe.observing() as obs:
        try:
            yield ending
        except BaseException as exc:
            code = _code_of(exc, skip_ok)
            outcome = getattr(exc, "outcome", None) or outcomes.BY_CODE.get(code, outcomes.BY_CODE[1]).name
            _send(command, spec, route, chosen, obs, started, outcome, code, getattr(exc, "report", None) or {})
            raise
    result = ending.result
    if result is not None and result.outcome != "follower":
        _send(command, spec, route, chosen, obs, started, result.outcome, 0, result.report)


def _code_of(exc: BaseException, skip_ok: bool) -> int:
    from tgsp.errors import NoveltySkipped

    from .errors import classify
    from .signals import Terminated

    if isinstance(exc, typer.Exit):
        return exc.exit_code
    if isinstance(exc, Terminated):
        return outcomes.code("terminated")
    if isinstance(exc, NoveltySkipped) and skip_ok:
        return 0
    return classify(exc)[2]


def _send(command, spec, route, chosen, obs: observe.Observation, started: float, outcome: str, code: int,
          report: dict) -> None:
    """Never changes how the round ends: not by an error here, and not by a signal that arrives while
    the sinks are sent (the round is over; its code stands, and a retry would repeat it)."""
    from tgsp.builder import TOOL

    from .signals import Terminated

    try:
        site = spec.output.signing_key if spec is not None and spec.federation is not None and \
            command == "peft-run" else None
        rec = RoundRecord(command, route, outcome, code, started, time.time(), list(obs.stages), report, spec, site,
                          _evidence(obs.evidence))
        sinks.emit(rec, chosen, sinks.Sent(_artifacts(rec), TOOL.removeprefix("tgflow ")), warn)
    except (Terminated, KeyboardInterrupt):
        warn("telemetry: interrupted while sending; the round's exit code is unchanged")
    except Exception as exc:  # a defect here must not become the round's outcome
        warn(f"telemetry: not sent ({type(exc).__name__}); the round's exit code is unchanged")


def _spec_of(path: Path):
    """The spec, for params, labels and its privacy mode; the route key from its raw JSON when it does
    not validate. Only a regular file of at most 1 MiB is read (never a FIFO the round must read)."""
    import stat

    from runners.spec import parse_spec
    from tgsp.errors import TgflowError

    try:
        if not stat.S_ISREG(os.stat(path).st_mode):
            return None, "unknown"
        with open(path, "rb") as f:
            raw = json.loads(f.read(1 << 20))
    except (OSError, ValueError, RecursionError):
        return None, "unknown"
    try:
        spec = parse_spec(raw)
        return spec, spec.route_key
    except (TgflowError, RecursionError):
        key = raw.get("route_key") if isinstance(raw, dict) else None
    return None, key if isinstance(key, str) and re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,62}", key) else "unknown"


def _evidence(path: Optional[Path]) -> list[dict]:
    from tgsp import evidence
    from tgsp.errors import TgflowError

    if path is None:
        return []
    try:
        return evidence.parse_jsonl(path.read_bytes())
    except (OSError, ValueError, TgflowError):
        return []


def _artifacts(rec: RoundRecord) -> dict[str, str]:
    """The model card (a packaged round) and a summary of the evidence: event types and times, and
    the chain's head. Both come from the evidence, which the package carries in the clear."""
    from tgsp import evidence

    if not rec.evidence:
        return {}
    private = rec.private  # under DP: no event times (they time the stages), no card (it counts the feed)
    summary = {"route": rec.route, "outcome": rec.outcome, "package_id": rec.report.get("package_id"),
               "events": [{"type": e.get("type"), **({} if private else {"time": e.get("time")})}
                          for e in rec.evidence],
               "chain_head": evidence.head_of(rec.evidence)}
    out = {"evidence_summary.json": json.dumps(summary, indent=2, sort_keys=True) + "\n"}
    if not private and rec.outcome == "packaged" and isinstance(rec.report.get("version"), int):
        from runners.learn.card import model_card

        out["model_card.md"] = model_card(rec.route, rec.report["version"],
                                          {e.get("type"): e.get("data") for e in rec.evidence})
    return out
