"""peft run --metrics-file: the Prometheus textfile, parsed with prometheus_client's own parser."""

from __future__ import annotations

import json
import time

from prometheus_client.parser import text_string_to_metric_families

from tgflow_cli.main import main


def samples(path) -> dict[str, list]:
    return {f.name: f.samples for f in text_string_to_metric_families(path.read_text())}


def value(fams, name, **labels) -> float:
    [s] = [s for s in fams[name] if all(s.labels.get(k) == v for k, v in labels.items())]
    return s.value


def run(spec, *extra) -> tuple[int, dict]:
    import io
    import contextlib

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main(["peft", "run", "--spec", str(spec), "--json", *extra])
    return code, json.loads(out.getvalue().strip().splitlines()[-1])


def test_a_packaged_round_then_a_refused_one(workspace, tmp_path, capsys):
    prom = tmp_path / "tgflow.prom"
    before = time.time()
    code, report = run(workspace.spec(), "--metrics-file", str(prom))
    assert code == 0
    fams = samples(prom)
    route = {"route": "support", "command": "peft-run"}
    success = value(fams, "tgflow_round_last_success_timestamp_seconds", **route)
    assert before <= success <= time.time()
    assert value(fams, "tgflow_round_exit_code", **route) == 0
    assert value(fams, "tgflow_round_outcome", outcome="packaged", **route) == 1
    cand = report["evaluation"]["candidate"]
    assert value(fams, "tgflow_round_eval_exact_match", model="candidate", **route) == cand["exact_match"]
    assert value(fams, "tgflow_round_eval_loss", model="base", **route) == report["evaluation"]["base"]["loss"]
    assert value(fams, "tgflow_round_forgetting", **route) == report["forgetting"]["forgetting"]
    assert value(fams, "tgflow_round_examples", kind="seen", **route) == report["novelty"]["examples"]
    assert value(fams, "tgflow_round_examples", kind="novel", **route) == report["novelty"]["novel"]
    assert value(fams, "tgflow_round_examples", kind="selected", **route) > 0
    stages = {s.labels["stage"]: s.value for s in fams["tgflow_round_stage_duration_seconds"]}
    assert list(stages) == ["prepare", "inputs", "select", "plan", "train", "evaluate", "release"]
    assert all(v >= 0 for v in stages.values())
    [info] = fams["tgflow_round_package_info"]
    assert info.labels["package_id"] == report["package_id"] and info.labels["version"] == "1"
    assert "tgflow_round_epsilon" not in fams  # no DP, no epsilon

    # The same data again: the round is skipped (exit 10). Its outcome and code replace the last ones;
    # the success time and the numbers it did not measure (the evaluation) stay as the packaged round left them.
    code, _ = run(workspace.spec(), "--metrics-file", str(prom))
    assert code == 10
    fams = samples(prom)
    assert value(fams, "tgflow_round_exit_code", **route) == 10
    assert [s.labels["outcome"] for s in fams["tgflow_round_outcome"]] == ["skipped-low-novelty"]
    assert value(fams, "tgflow_round_last_success_timestamp_seconds", **route) == success
    assert value(fams, "tgflow_round_last_run_timestamp_seconds", **route) > success
    assert value(fams, "tgflow_round_eval_exact_match", model="candidate", **route) == cand["exact_match"]
    assert [s.labels["stage"] for s in fams["tgflow_round_stage_duration_seconds"]] == ["prepare", "inputs", "select"]


def test_routes_share_a_file_and_a_corrupt_one_is_replaced(workspace, tmp_path, capsys):
    prom = tmp_path / "shared.prom"
    prom.write_text("this is { not prometheus\n")
    other = ('# HELP tgflow_round_exit_code Exit code of the last round (docs/cli.md)\n'
             '# TYPE tgflow_round_exit_code gauge\n')
    code = main(["peft", "run", "--spec", str(workspace.spec()), "--metrics-file", str(prom)])
    assert code == 0
    assert "not in the Prometheus text format; rewriting it" in capsys.readouterr().err
    # Another route's series, as its own round left them, survive this route's next write.
    text = prom.read_text().replace('route="support"', 'route="billing"')
    prom.write_text(text)
    assert main(["peft", "run", "--spec", str(workspace.spec()), "--metrics-file", str(prom)]) == 10  # nothing new
    fams = samples(prom)
    codes = {s.labels["route"]: s.value for s in fams["tgflow_round_exit_code"]}
    assert codes == {"billing": 0, "support": 10}
    assert {s.labels["route"] for s in fams["tgflow_round_last_success_timestamp_seconds"]} == {"billing"}
    assert other.splitlines()[0] in prom.read_text()


def test_settings_from_the_environment_and_config(workspace, tmp_path, monkeypatch, capsys):
    prom = tmp_path / "env.prom"
    monkeypatch.setenv("TGFLOW_METRICS_FILE", str(prom))
    assert main(["peft", "run", "--spec", str(workspace.spec())]) == 0
    assert "tgflow_round_last_success_timestamp_seconds" in samples(prom)
    monkeypatch.delenv("TGFLOW_METRICS_FILE")
    home = tmp_path / "home"
    (home / "config.toml").write_text('[metrics]\nfile = "cfg.prom"\n')  # relative to the keyring folder
    assert main(["peft", "run", "--spec", str(workspace.spec())]) == 10
    assert samples(home / "cfg.prom")["tgflow_round_exit_code"][0].value == 10


def test_bad_settings_stop_before_any_work(workspace, tmp_path, capsys):
    spec = workspace.spec()
    cases = [(["--metrics-file", str(tmp_path / "missing" / "m.prom")], "does not exist"),
             (["--metrics-file", str(tmp_path / "m.txt")], "reads only *.prom files"),
             (["--pushgateway", "pushgateway:9091"], "must be an http:// or https:// URL"),
             (["--pushgateway", "http://user:s3cret@127.0.0.1:9"], "credentials in the URL are refused")]
    for flags, needle in cases:
        assert main(["peft", "run", "--spec", str(spec), *flags]) == 2
        err = capsys.readouterr().err
        assert needle in err and "s3cret" not in err
    assert not (workspace.state / "rounds").exists()  # no round ran


def test_an_unwritable_metrics_file_warns_and_keeps_the_exit_code(workspace, tmp_path, capsys):
    prom = tmp_path / "blocked.prom"
    (tmp_path / "blocked.prom.lock").mkdir()  # a folder where the lock file goes: the write fails (even as root)
    assert main(["peft", "run", "--spec", str(workspace.spec()), "--metrics-file", str(prom)]) == 0
    err = capsys.readouterr().err
    assert "telemetry: the metrics file was not updated" in err and "exit code is unchanged" in err
    assert not prom.exists()


def test_a_sigterm_round_reports_interrupted_and_no_success(workspace, tmp_path, capsys):
    import os
    import signal

    from tests.runners.test_round import _cli, _wait_for_checkpoint

    prom = tmp_path / "term.prom"
    spec = workspace.spec(training={"steps": 40, "batch_size": 8, "learning_rate": 0.01, "seed": 3, "max_seq_len": 64,
                                    "checkpoint_every": 5})
    proc = _cli(spec, {**os.environ, "TGFLOW_METRICS_FILE": str(prom)})
    _wait_for_checkpoint(workspace.state, proc)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=120) == 75, proc.stderr.read()
    fams = samples(prom)
    assert fams["tgflow_round_exit_code"][0].value == 75
    assert [s.labels["outcome"] for s in fams["tgflow_round_outcome"]] == ["interrupted-resumable"]
    assert "tgflow_round_last_success_timestamp_seconds" not in fams
    [train] = [s for s in fams["tgflow_round_stage_duration_seconds"] if s.labels["stage"] == "train"]
    assert train.value > 0


def test_a_file_it_cannot_read_is_left_as_it_is(tmp_path):
    """Rewriting an unreadable or oversized shared file would drop every other route's series."""
    import pytest

    from runners.telemetry import prom
    from runners.telemetry.record import RoundRecord, public
    from tgsp.errors import TgflowError

    pub = public(RoundRecord("peft-run", "support", "packaged", 0, time.time() - 5, time.time()))
    big = tmp_path / "big.prom"
    big.write_bytes(b"# other writers\n" + b"x 1\n" * (prom.MAX_FILE // 4 + 1))
    before = big.read_bytes()
    with pytest.raises(TgflowError, match="left it as it is"):
        prom.write_textfile(big, pub)
    assert big.read_bytes() == before
    link = tmp_path / "link.prom"
    link.symlink_to(tmp_path / "elsewhere.prom")
    with pytest.raises(TgflowError, match="left it as it is"):
        prom.write_textfile(link, pub)
    assert link.is_symlink() and not (tmp_path / "elsewhere.prom").exists()
    # Other writers' families keep their types and values.
    shared = tmp_path / "shared.prom"
    shared.write_text('# TYPE jobs_total counter\njobs_total 3\n# TYPE h histogram\nh_bucket{le="+Inf"} 2\n'
                      'h_count 2\nh_sum 1.5\n')
    prom.write_textfile(shared, pub)
    fams = {f.name: f for f in text_string_to_metric_families(shared.read_text())}
    assert fams["h"].type == "histogram" and [s.value for s in fams["h"].samples] == [2, 2, 1.5]
    assert "tgflow_round_exit_code" in fams
    assert "jobs_total 3.0" in shared.read_text()


def test_a_signal_while_sending_keeps_the_rounds_code(workspace, tmp_path, monkeypatch, capsys):
    from runners.telemetry import sinks
    from tgflow_cli.signals import Terminated

    def terminated(*_a, **_k):
        raise Terminated(15)

    monkeypatch.setattr(sinks, "emit", terminated)
    assert main(["peft", "run", "--spec", str(workspace.spec()), "--metrics-file", str(tmp_path / "m.prom")]) == 0
    assert "telemetry: interrupted while sending; the round's exit code is unchanged" in capsys.readouterr().err
