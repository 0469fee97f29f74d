"""tgflow export --backend k8s carries the telemetry settings, validated by kubernetes-validate."""

from __future__ import annotations

from pathlib import Path

import yaml

from tgflow_cli.main import main

ROOT = Path(__file__).resolve().parents[2]
SETS = ["--set", "metrics_host_path=/var/lib/node_exporter/textfile", "--set", "pushgateway=http://pg.monitoring:9091",
        "--set", "pushgateway_secret=tgflow-pushgateway", "--set", "otlp_endpoint=http://otel.monitoring:4318"]


def test_the_cronjob_reports_where_it_was_told(tmp_path, capsys):
    out = tmp_path / "k8s"
    code = main(["export", "--backend", "k8s", "--spec", str(ROOT / "examples" / "run_spec.json"), "-o", str(out),
                 "--image", "registry.example/tgflow:0.1.0", "--schedule", "0 3 * * *", *SETS, "--check"])
    out_text, err = capsys.readouterr()
    assert code == 0, err
    assert "cronjob.yaml: kubernetes-validate 1.32 strict" in out_text + err
    pod = yaml.safe_load((out / "cronjob.yaml").read_text())["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    [c] = pod["containers"]
    env = {e["name"]: e.get("value", e.get("valueFrom")) for e in c["env"]}
    assert env["TGFLOW_METRICS_FILE"] == "/metrics/tgflow-support.prom"
    assert env["TGFLOW_PUSHGATEWAY"] == "http://pg.monitoring:9091"
    assert env["TGFLOW_PUSHGATEWAY_USERNAME"] == {"secretKeyRef": {"name": "tgflow-pushgateway", "key": "username"}}
    assert env["TGFLOW_PUSHGATEWAY_PASSWORD_FILE"] == "/secrets/pushgateway/password"
    assert env["OTEL_EXPORTER_OTLP_ENDPOINT"] == "http://otel.monitoring:4318"
    vols = {v["name"]: v for v in pod["volumes"]}
    assert vols["metrics"]["hostPath"]["path"] == "/var/lib/node_exporter/textfile"
    assert vols["pushgateway"]["secret"]["items"] == [{"key": "password", "path": "password"}]
    mounts = {m["name"]: m["mountPath"] for m in c["volumeMounts"]}
    assert mounts["metrics"] == "/metrics" and mounts["pushgateway"] == "/secrets/pushgateway"


def test_a_credential_in_the_url_is_refused(tmp_path, capsys):
    code = main(["export", "--backend", "k8s", "--spec", str(ROOT / "examples" / "run_spec.json"), "-o",
                 str(tmp_path / "k"), "--image", "registry.example/tgflow:0.1.0",
                 "--set", "pushgateway=http://u:pw@pg:9091"])
    assert code == 2 and not (tmp_path / "k").exists()
