"""--pushgateway against Debian's prometheus-pushgateway, started by the test."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from tests.telemetry.conftest import Gateway, free_port
from tgflow_cli.main import main


def ours(text: str) -> dict[str, list]:
    return {f.name: f.samples for f in text_string_to_metric_families(text) if f.name.startswith("tgflow_")}


def test_a_success_then_a_skip_keep_the_success_time(workspace, gateway, capsys):
    spec = workspace.spec()
    assert main(["peft", "run", "--spec", str(spec), "--pushgateway", gateway.url]) == 0
    fams = ours(gateway.metrics())
    [success] = fams["tgflow_round_last_success_timestamp_seconds"]
    assert {k: success.labels.get(k) for k in ("job", "route", "command", "site")} == \
        {"job": "tgflow", "route": "support", "command": "peft-run", "site": None}
    assert fams["tgflow_round_exit_code"][0].value == 0
    assert main(["peft", "run", "--spec", str(spec), "--pushgateway", gateway.url]) == 10
    fams = ours(gateway.metrics())
    assert fams["tgflow_round_exit_code"][0].value == 10
    assert fams["tgflow_round_last_success_timestamp_seconds"][0].value == success.value
    assert [s.labels["outcome"] for s in fams["tgflow_round_outcome"]] == ["skipped-low-novelty"]


def test_basic_auth_from_a_file_and_never_printed(workspace, tmp_path, monkeypatch, capsys):
    import bcrypt

    password = "pg-s3cret-Xq"
    digest = bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=4)).decode()
    g = Gateway(tmp_path, web_config=f"basic_auth_users:\n  tgflow: {digest}\n")
    try:
        spec = workspace.spec()
        # Without credentials the gateway answers 401: one warning, the round's code unchanged.
        assert main(["peft", "run", "--spec", str(spec), "--pushgateway", g.url]) == 0
        err = capsys.readouterr().err
        assert "telemetry: the Pushgateway was not updated" in err and "401" in err
        (tmp_path / "pw").write_text(password + "\n")
        monkeypatch.setenv("TGFLOW_PUSHGATEWAY_USERNAME", "tgflow")
        monkeypatch.setenv("TGFLOW_PUSHGATEWAY_PASSWORD_FILE", str(tmp_path / "pw"))
        assert main(["peft", "run", "--spec", str(spec), "--pushgateway", g.url, "-v"]) == 10
        out, err = capsys.readouterr()
        assert "telemetry" not in err and password not in out + err
        fams = ours(g.metrics(auth=("tgflow", password)))
        assert fams["tgflow_round_exit_code"][0].value == 10
    finally:
        g.stop()


def test_an_unreachable_gateway_warns_once(workspace, capsys):
    url = f"http://127.0.0.1:{free_port()}"
    assert main(["peft", "run", "--spec", str(workspace.spec()), "--pushgateway", url]) == 0
    lines = [ln for ln in capsys.readouterr().err.splitlines() if "telemetry" in ln]
    assert len(lines) == 1 and "Pushgateway was not updated" in lines[0] and "unchanged" in lines[0]


def test_a_gateway_that_never_answers_costs_at_most_its_deadline(capsys):
    """A server that accepts and then says nothing: the sink's deadline, not the socket's, ends the wait."""
    import socket
    import time
    from dataclasses import replace

    from runners.telemetry import sinks
    from runners.telemetry.record import RoundRecord

    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    try:
        sink = replace(sinks.Pushgateway(f"http://127.0.0.1:{server.getsockname()[1]}", None, None), deadline=1.0)
        warnings: list[str] = []
        class One(sinks.Settings):
            def sinks(self):
                return [sink]

        settings = One()
        t = time.monotonic()
        sinks.emit(RoundRecord("peft-run", "support", "packaged", 0, time.time() - 1, time.time()), settings,
                   sinks.Sent({}, "test"), warnings.append)
        assert time.monotonic() - t < 3
        assert len(warnings) == 1 and "no answer within 1 s" in warnings[0]
    finally:
        server.close()
