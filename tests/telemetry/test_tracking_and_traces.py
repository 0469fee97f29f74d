"""--mlflow against a real local store (read back with MlflowClient), --otlp-endpoint against a real
OTLP/HTTP receiver, and the rules: nothing private leaves, nothing is sent unless configured."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.telemetry.conftest import free_port
from tgflow_cli.main import main

ROOT = Path(__file__).resolve().parents[2]
TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
DP = {"mode": "dp", "dp": {"target_epsilon": 8, "target_delta": 1e-5, "max_grad_norm": 1.0}}


def _mlflow_run(uri: str, route: str):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name(route)
    [run] = client.search_runs([exp.experiment_id])
    return client, run


def test_a_round_as_an_mlflow_run_and_an_otlp_trace(workspace, receiver, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # the sqlite store's default artifact root is ./mlruns
    monkeypatch.setenv("TRACEPARENT", TRACEPARENT)
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    code = main(["peft", "run", "--spec", str(workspace.spec()), "--json", "--mlflow", uri,
                 "--otlp-endpoint", receiver.url])
    out, err = capsys.readouterr()
    assert code == 0 and "telemetry" not in err
    report = json.loads(out.strip().splitlines()[-1])
    client, run = _mlflow_run(uri, "support")
    assert run.info.status == "FINISHED" and run.info.run_name == "support v1"
    assert run.data.params["lora.r"] == "4" and run.data.params["training.learning_rate"] == "0.01"
    assert run.data.params["privacy.mode"] == "off" and run.data.params["lora.target_modules"] == "q_proj,v_proj"
    tags = run.data.tags
    assert (tags["route"], tags["version"], tags["package_id"], tags["outcome"]) == \
        ("support", "1", report["package_id"], "packaged")
    losses = [m.value for m in client.get_metric_history(run.info.run_id, "train/loss")]
    assert losses == report["training"]["loss_curve"]["losses"]
    assert run.data.metrics["eval/candidate/loss"] == report["evaluation"]["candidate"]["loss"]
    assert run.data.metrics["forgetting"] == report["forgetting"]["forgetting"]
    names = sorted(a.path for a in client.list_artifacts(run.info.run_id))
    assert names == ["evidence_summary.json", "model_card.md"]
    card = Path(client.download_artifacts(run.info.run_id, "model_card.md", str(tmp_path))).read_text()
    assert "support" in card and "exact match" in card

    spans = receiver.spans()
    assert {p for p, _ in receiver.requests} == {"/v1/traces"}
    by_name = {s.name: s for s in spans}
    root = by_name["tgflow peft run"]
    assert root.trace_id.hex() == TRACEPARENT.split("-")[1] and root.parent_span_id.hex() == TRACEPARENT.split("-")[2]
    stages = [s for s in spans if s.parent_span_id == root.span_id]
    assert [s.name for s in sorted(stages, key=lambda s: s.start_time_unix_nano)] == \
        ["prepare", "inputs", "select", "plan", "train", "evaluate", "release"]
    assert by_name["scoring novelty"].parent_span_id == by_name["select"].span_id
    attrs = {a.key: a.value for a in root.attributes}
    assert attrs["tgflow.route"].string_value == "support" and attrs["tgflow.outcome"].string_value == "packaged"
    assert attrs["tgflow.package_id"].string_value == report["package_id"]


def test_under_dp_nothing_private_leaves(workspace, receiver, gateway, tmp_path, monkeypatch, capsys):
    """Every metric, param, tag, artifact and span of a DP round, searched for feed text and for the
    round's private training losses (taken from inside the training loop)."""
    from runners.stages import update as update_stage

    private_losses: list[float] = []
    shown = update_stage._shown

    def spy(progress, *, private):
        inner = shown(progress, private=private)
        return lambda d, t, loss, tokens: (private_losses.append(loss), inner(d, t, loss, tokens))[1]

    monkeypatch.setattr(update_stage, "_shown", spy)
    monkeypatch.chdir(tmp_path)
    uri, prom = f"sqlite:///{tmp_path}/mlflow.db", tmp_path / "dp.prom"
    spec = workspace.spec(privacy=DP, eval={"type": "jsonl", "uri": "feeds/support-eval.jsonl", "max_examples": 16})
    code = main(["peft", "run", "--spec", str(spec), "--json", "--metrics-file", str(prom), "--pushgateway",
                 gateway.url, "--mlflow", uri, "--otlp-endpoint", receiver.url])
    out, err = capsys.readouterr()
    assert code == 0 and "telemetry" not in err, err
    report = json.loads(out.strip().splitlines()[-1])
    assert len(private_losses) == 6

    client, run = _mlflow_run(uri, "support")
    arts = "".join(Path(client.download_artifacts(run.info.run_id, a.path, str(tmp_path / "a"))).read_text()
                   for a in client.list_artifacts(run.info.run_id))
    pushed = [ln for ln in gateway.metrics().splitlines() if "tgflow" in ln]  # not the gateway's own go_* metrics
    emitted = "\n".join([prom.read_text(), *pushed, json.dumps(run.data.to_dictionary()), arts,
                         *(str(r) for _, r in receiver.requests)])
    assert not any(k.startswith(("train/", "examples/", "duration/")) for k in run.data.metrics)
    assert "tgflow_round_examples" not in emitted and "tgflow_round_stage_duration" not in emitted
    assert "tgflow.withheld" in emitted
    stages = [s for s in receiver.spans() if s.name in ("prepare", "train", "release")]
    assert len(stages) == 3 and all(s.start_time_unix_nano == s.end_time_unix_nano for s in stages)
    assert run.data.metrics["privacy/epsilon"] == report["privacy"]["epsilon"]
    for loss in private_losses:
        for text in (repr(loss), f"{loss:.6f}", f"{loss:.5f}"):  # as reports round it (shorter would match by chance)
            assert text not in emitted, text
    feed = [json.loads(line) for line in (workspace.root / "feeds" / "support-tickets.jsonl").read_text().splitlines()]
    texts = [f for row in feed[:64] for f in row.values() if isinstance(f, str) and len(f) > 12]
    assert len(texts) >= 64
    for text in texts:
        assert text not in emitted and json.dumps(text)[1:-1] not in emitted


def test_an_unreachable_tracker_and_collector_warn_and_keep_the_code(workspace, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    dead = f"http://127.0.0.1:{free_port()}"
    assert main(["peft", "run", "--spec", str(workspace.spec()), "--mlflow", dead, "--otlp-endpoint", dead]) == 0
    lines = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("telemetry")]
    assert len(lines) == 2 and "MLflow was not updated" in lines[0] and "OTLP collector was not updated" in lines[1]


def test_nothing_is_sent_or_loaded_unless_configured(workspace, tmp_path):
    """A round with no telemetry settings opens no socket and loads no telemetry client."""
    probe = f"""
import socket, sys
calls = []
real = socket.socket.connect
def connect(self, addr):
    calls.append(addr)
    return real(self, addr)
socket.socket.connect = connect
from tgflow_cli.main import main
code = main(["peft", "run", "--spec", {str(workspace.spec())!r}])
loaded = sorted(m for m in sys.modules if m.split('.')[0] in ('mlflow', 'opentelemetry', 'prometheus_client'))
print(code, calls, loaded)
"""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "TGFLOW_METRICS", "TGFLOW_PUSH",
                                                                   "TGFLOW_MLFLOW", "MLFLOW_"))}
    done = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.stdout.strip().splitlines()[-1] == "0 [] []", done.stderr[-2000:]


@pytest.mark.parametrize("flag,extra", [("--mlflow", "tracking"), ("--otlp-endpoint", "otel")])
def test_a_missing_extra_is_named_before_the_round(workspace, monkeypatch, capsys, flag, extra):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name.split(".")[0] in ("mlflow", "opentelemetry") else real(name, *a))
    assert main(["peft", "run", "--spec", str(workspace.spec()), flag, "http://127.0.0.1:9"]) == 2
    assert f"pip install 'tgflow[{extra}]'" in capsys.readouterr().err
    assert not (workspace.state / "rounds").exists()


def test_a_cluster_wide_otel_endpoint_without_the_extra_only_warns(workspace, monkeypatch, capsys):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name.split(".")[0] == "opentelemetry" else real(name, *a))
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:9")
    assert main(["peft", "run", "--spec", str(workspace.spec())]) == 0
    err = capsys.readouterr().err
    assert "OTEL_EXPORTER_OTLP_ENDPOINT is set but no traces are sent" in err and "tgflow[otel]" in err
