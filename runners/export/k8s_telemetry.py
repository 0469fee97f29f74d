"""What a Kubernetes round reports to (docs/observability.md), from --set settings:

- ``metrics_host_path``: node_exporter's textfile folder on the node, mounted at /metrics; the
  round writes /metrics/tgflow-<route>.prom there (TGFLOW_METRICS_FILE);
- ``pushgateway``: the Pushgateway URL (TGFLOW_PUSHGATEWAY); ``pushgateway_secret``: a Secret
  with ``username`` and ``password`` for its basic auth (the password as a mounted file);
- ``otlp_endpoint``: the OTLP/HTTP collector (OTEL_EXPORTER_OTLP_ENDPOINT);
- ``mlflow``: the MLflow tracking URI (TGFLOW_MLFLOW).
"""

from __future__ import annotations

import re
from typing import Any

from tgsp.errors import InputError

SETTINGS = frozenset({"metrics_host_path", "pushgateway", "pushgateway_secret", "otlp_endpoint", "mlflow"})
_URL = re.compile(r"https?://[A-Za-z0-9.\[\]:-]+(/[A-Za-z0-9._~/-]*)?\Z")  # no user:password@, no query
_PATH = re.compile(r"/[A-Za-z0-9._/-]{0,1023}\Z")


def env(settings: dict[str, str], route: str) -> dict[str, str]:
    """The variables the round reads its telemetry settings from."""
    for key in ("pushgateway", "otlp_endpoint"):
        if key in settings and not _URL.match(settings[key]):
            raise InputError(f"--set {key} {settings[key]!r} is not an http(s) URL without credentials",
                             hint="e.g. http://pushgateway.monitoring:9091; basic auth goes in --set pushgateway_secret")
    if "metrics_host_path" in settings and not _PATH.match(settings["metrics_host_path"]):
        raise InputError(f"--set metrics_host_path {settings['metrics_host_path']!r} is not an absolute path",
                         hint="node_exporter's --collector.textfile.directory on the node")
    if "pushgateway_secret" in settings and "pushgateway" not in settings:
        raise InputError("--set pushgateway_secret needs --set pushgateway URL")
    out = {}
    if "metrics_host_path" in settings:
        out["TGFLOW_METRICS_FILE"] = f"/metrics/tgflow-{route}.prom"
    if "pushgateway" in settings:
        out["TGFLOW_PUSHGATEWAY"] = settings["pushgateway"]
    if "pushgateway_secret" in settings:
        out["TGFLOW_PUSHGATEWAY_PASSWORD_FILE"] = "/secrets/pushgateway/password"
    if "otlp_endpoint" in settings:
        out["OTEL_EXPORTER_OTLP_ENDPOINT"] = settings["otlp_endpoint"]
    if "mlflow" in settings:
        out["TGFLOW_MLFLOW"] = settings["mlflow"]
    return out


def mount(settings: dict[str, str], container: dict[str, Any], pod: dict[str, Any]) -> None:
    """The textfile folder and the Pushgateway Secret, as volumes of the round's pod."""
    volumes, mounts = pod["spec"]["volumes"], container["volumeMounts"]
    if "metrics_host_path" in settings:
        volumes.append({"name": "metrics", "hostPath": {"path": settings["metrics_host_path"],
                                                        "type": "DirectoryOrCreate"}})
        mounts.append({"name": "metrics", "mountPath": "/metrics"})
    if "pushgateway_secret" in settings:
        secret = settings["pushgateway_secret"]
        volumes.append({"name": "pushgateway", "secret": {"secretName": secret, "defaultMode": 0o400,
                                                          "items": [{"key": "password", "path": "password"}]}})
        mounts.append({"name": "pushgateway", "mountPath": "/secrets/pushgateway", "readOnly": True})
        container["env"].append({"name": "TGFLOW_PUSHGATEWAY_USERNAME",
                                 "valueFrom": {"secretKeyRef": {"name": secret, "key": "username"}}})
