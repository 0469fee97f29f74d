"""Prometheus, as batch jobs report to it: an atomically replaced textfile for node_exporter's
textfile collector, and the Pushgateway. The exposition format is prometheus-client's.

Both keep one rule: a round replaces the families it reports for its own (route, command,
site); a round that did not succeed leaves ``tgflow_round_last_success_timestamp_seconds``
as it was (the textfile carries it over; the Pushgateway gets a POST without it, where a
success PUTs the whole group). Other routes' series in a shared file are kept.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Callable

from tgsp.atomic import write_bytes
from tgsp.errors import TgflowError

from ..state.locks import locked
from .record import Public

LAST_SUCCESS = "tgflow_round_last_success_timestamp_seconds"
MAX_FILE = 8 << 20  # a shared textfile of many routes stays far below this
LOCK_WAIT = 10.0

Samples = list[tuple[dict[str, str], float]]
# name, help, the samples of a round's public view (extra labels, value)
TABLE: tuple[tuple[str, str, Callable[[Public], Samples]], ...] = (
    (LAST_SUCCESS, "Unix time a round of this route last wrote its package (only a packaged round moves it)",
     lambda p: [({}, p.ended)] if p.succeeded else []),
    ("tgflow_round_last_run_timestamp_seconds", "Unix time the last round ended, whatever its outcome",
     lambda p: [({}, p.ended)]),
    ("tgflow_round_exit_code", "Exit code of the last round (docs/cli.md)", lambda p: [({}, p.exit_code)]),
    ("tgflow_round_outcome", "The last round's outcome: 1 for the outcome it had",
     lambda p: [({"outcome": p.outcome}, 1.0)]),
    ("tgflow_round_duration_seconds", "Wall time of the last round", lambda p: [({}, p.ended - p.started)]),
    ("tgflow_round_stage_duration_seconds", "Wall time of each stage of the last round (not under DP)",
     lambda p: [({"stage": s.name}, s.seconds) for s in p.stages if s.depth == 0 and p.timed]),
    ("tgflow_round_examples", "Examples the last round saw, found novel and selected for training (not under DP)",
     lambda p: [({"kind": k}, v) for k, v in sorted(p.examples.items())]),
    ("tgflow_round_eval_exact_match", "Exact match on the eval set, by model (base, production, candidate)",
     lambda p: _eval(p, "exact_match")),
    ("tgflow_round_eval_choice_accuracy", "Choice accuracy on the eval set, by model", lambda p: _eval(p, "choice_accuracy")),
    ("tgflow_round_eval_loss", "Eval loss, by model", lambda p: _eval(p, "loss")),
    ("tgflow_round_forgetting", "Relative rise of the reference loss (the forgetting budget's measure)",
     lambda p: [] if p.forgetting is None else [({}, p.forgetting)]),
    ("tgflow_round_epsilon", "Epsilon this round spent (DP)", lambda p: _priv(p, "epsilon")),
    ("tgflow_route_epsilon_spent", "Epsilon the route has spent over all rounds (DP)", lambda p: _priv(p, "route_epsilon")),
    ("tgflow_route_epsilon_budget", "The route's epsilon budget (DP, when set)", lambda p: _priv(p, "route_budget_epsilon")),
    ("tgflow_round_package_info", "The last round's package: version, package id and parent id",
     lambda p: [(dict(p.info), 1.0)] if p.info.get("package_id") else []),
)


def _eval(p: Public, key: str) -> Samples:
    return [({"model": m}, vals[key]) for m, vals in p.evaluation.items() if key in vals]


def _priv(p: Public, key: str) -> Samples:
    return [({}, p.privacy[key])] if key in p.privacy else []


def families(p: Public, *, with_last_success: bool = True) -> list:
    from prometheus_client.metrics_core import Metric

    out = []
    for name, help_, samples in TABLE:
        if name == LAST_SUCCESS and not with_last_success:
            continue
        metric = Metric(name, help_, "gauge")
        for extra, value in samples(p):
            metric.add_sample(name, {**p.labels, **extra}, float(value))
        if metric.samples:
            out.append(metric)
    return out


def _registry(metrics: list):
    from prometheus_client import CollectorRegistry

    class _Fixed:  # a collector of families already made
        def collect(self):
            return sorted(metrics, key=lambda m: m.name)

    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Fixed())
    return registry


def render(metrics: list) -> bytes:
    from prometheus_client import generate_latest

    return generate_latest(_registry(metrics))


def _ours(labels: dict[str, str], key: dict[str, str]) -> bool:
    return all(labels.get(k) == key.get(k) for k in ("route", "command", "site"))


def merge(old: list, new: list, key: dict[str, str], *, replace_all: bool) -> list:
    """``new``, plus the samples of ``old`` that are not this (route, command, site)'s, and, unless
    ``replace_all``, this one's samples of the families ``new`` does not report. Families of
    other writers keep their type (counters, histograms, untyped)."""
    from prometheus_client.metrics_core import Metric

    fresh = {m.name: m for m in new}
    out = {m.name: m for m in new}
    for fam in old:
        keep = [s for s in fam.samples
                if not _ours(s.labels, key) or (not replace_all and fam.name not in fresh)]
        if not keep:
            continue
        target = out.get(fam.name)
        if target is None:
            target = out[fam.name] = Metric(fam.name, fam.documentation, fam.type, getattr(fam, "unit", ""))
        for s in keep:
            target.add_sample(s.name, s.labels, s.value, s.timestamp)
    return list(out.values())


def read(path: Path) -> tuple[list, str | None]:
    """The families in an existing textfile, or ([], why it was rewritten). A file that cannot be
    read, is too large, or is not a regular file is left as it is (raises): rewriting it would drop
    every other route's series. One that is not in the text format is replaced, with a note
    (node_exporter cannot read it either)."""
    from prometheus_client.parser import text_string_to_metric_families

    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOFOLLOW", 0) | os.O_CLOEXEC)
    except FileNotFoundError:
        return [], None
    except OSError as exc:
        raise TgflowError(f"cannot read {path} ({exc.strerror}); left it as it is") from None
    with os.fdopen(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
            raise TgflowError(f"{path} is not a regular file; left it as it is")
        data = f.read(MAX_FILE + 1)
    if len(data) > MAX_FILE:
        raise TgflowError(f"{path} is over {MAX_FILE >> 20} MiB; left it as it is")
    try:
        return list(text_string_to_metric_families(data.decode("utf-8"))), None
    except (ValueError, UnicodeDecodeError, TypeError, IndexError, KeyError):
        return [], f"the previous {path.name} is not in the Prometheus text format; rewriting it"


def write_textfile(path: Path, p: Public) -> str | None:
    """Merge this round into the textfile, atomically (temp, fsync, rename). Returns a note, or None."""
    # Rounds of several routes (or an accidental second round) may share one textfile.
    with locked(Path(f"{path}.lock"), f"the metrics file {path.name}", "telemetry", wait=LOCK_WAIT):
        old, note = read(path)
        merged = merge(old, families(p), p.labels, replace_all=p.succeeded)
        write_bytes(path, render(merged), mode=0o644)
    return note


def push(url: str, p: Public, *, username: str | None = None, password: str | None = None,
         timeout: float = 5.0) -> None:
    """A success replaces the route's group (PUT); anything else POSTs its families without
    the last-success time, so the gateway keeps the one it has."""
    from prometheus_client import push_to_gateway, pushadd_to_gateway
    from prometheus_client.exposition import basic_auth_handler, default_handler

    def handler(url, method, timeout, headers, data):  # prometheus-client calls it with these keywords
        if username is not None:
            return basic_auth_handler(url, method, timeout, headers, data, username, password or "")
        return default_handler(url, method, timeout, headers, data)

    send = push_to_gateway if p.succeeded else pushadd_to_gateway
    send(url, job="tgflow", registry=_registry(families(p, with_last_success=p.succeeded)),
         grouping_key=dict(p.labels), timeout=timeout, handler=handler)
