"""A round as an MLflow run, in an experiment named after the route (``tgflow[tracking]``).

Params are the spec's settings, metrics the public numbers (the per-step training loss
only outside DP), tags the route, version, package ids and outcome, and the artifacts the
model card and an evidence summary. Never adapter weights or feed text: those stay
encrypted in the package.
"""

from __future__ import annotations

import contextlib
import logging
import os
from typing import Iterator

from .record import Public

# An unreachable server must not hold a round for MLflow's default 7 retries of 120 s.
_HTTP = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1", "MLFLOW_HTTP_REQUEST_TIMEOUT": "10",
         "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1", "MLFLOW_HTTP_RESPECT_RETRY_AFTER_HEADER": "false"}
BATCH = 1000  # MLflow's log_batch limit on metrics


@contextlib.contextmanager
def _bounded_http() -> Iterator[None]:
    """Bounded retries, and MLflow's own INFO lines (store migrations) kept out of the round's log."""
    saved = {k: os.environ.get(k) for k in _HTTP}
    for k, v in _HTTP.items():
        os.environ.setdefault(k, v)
    logs = [(logging.getLogger(n), logging.getLogger(n).level) for n in ("mlflow", "urllib3", "alembic")]
    for log, _ in logs:  # one warning line from tgflow, not the libraries' retries and migrations
        log.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for log, level in logs:
            log.setLevel(level)
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)


def metrics(p: Public) -> list[tuple[str, float, int]]:
    """(key, value, step): the per-step training loss, then the round's numbers at step 0."""
    out = [("train/loss", loss, step) for step, loss in p.loss_curve]
    for model, vals in p.evaluation.items():
        out += [(f"eval/{model}/{k}", v, 0) for k, v in vals.items()]
    if p.forgetting is not None:
        out.append(("forgetting", p.forgetting, 0))
    out += [(f"privacy/{k}", v, 0) for k, v in p.privacy.items()]
    out += [(f"examples/{k}", float(v), 0) for k, v in p.examples.items()]
    out += [(f"duration/{s.name}", s.seconds, 0) for s in p.stages if s.depth == 0 and p.timed]
    return out


def tags(p: Public) -> dict[str, str]:
    out = {**p.labels, **p.info, "outcome": p.outcome, "exit_code": str(p.exit_code), "tgflow.producer": "tgflow"}
    if p.withheld:
        out["tgflow.withheld"] = ", ".join(p.withheld)
    return out


def log_run(uri: str, p: Public, artifacts: dict[str, str]) -> str:
    """Log the round; returns the run id."""
    from mlflow.entities import Metric, Param, RunTag
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    with _bounded_http():
        client = MlflowClient(tracking_uri=uri)
        route = p.labels["route"]
        exp = client.get_experiment_by_name(route)
        try:
            eid = exp.experiment_id if exp else client.create_experiment(route)
        except MlflowException:  # another round created it meanwhile
            eid = client.get_experiment_by_name(route).experiment_id
        name = f"{route} v{p.info['version']}" if "version" in p.info else f"{route} {p.outcome}"
        run = client.create_run(eid, start_time=int(p.started * 1000), run_name=name)
        rid, stamp = run.info.run_id, int(p.ended * 1000)
        ms = [Metric(k, float(v), stamp, step) for k, v, step in metrics(p)]
        client.log_batch(rid, params=[Param(k, v[:6000]) for k, v in p.params.items()],
                         tags=[RunTag(k, v) for k, v in tags(p).items()], metrics=ms[:BATCH])
        for at in range(BATCH, len(ms), BATCH):
            client.log_batch(rid, metrics=ms[at:at + BATCH])
        for path, text in artifacts.items():
            client.log_text(rid, text, path)
        client.set_terminated(rid, status="FINISHED" if p.exit_code == 0 else "FAILED", end_time=stamp)
    return rid
