"""fed aggregate and a federated site's round report with their own command and site labels."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from tests.fed.conftest import EXAMPLES, SITES
from tgflow_cli.main import main


def _series(path) -> dict[str, list]:
    return {f.name: f.samples for f in text_string_to_metric_families(path.read_text())}


def test_a_site_and_the_aggregator_share_a_metrics_file(fed, tmp_path, capsys):
    prom = tmp_path / "fed.prom"
    site_spec = fed.spec("tele-site", feed={"type": "jsonl", "uri": str(EXAMPLES / "feeds/fed/site-a.jsonl")},
                         training={"steps": 4, "batch_size": 16, "learning_rate": 0.003, "seed": 7, "max_seq_len": 96},
                         output={"path": "out/tele-site/update.tgsp", "signing_key": "site-a", "recipients": ["operator"],
                                 "registry": "out/tele-site/registry"})
    assert main(["peft", "run", "--spec", str(site_spec), "--metrics-file", str(prom)]) == 0
    agg = fed.spec("tele-agg")
    code = main(["fed", "aggregate", *(str(fed.updates[s]) for s in SITES), "--spec", str(agg), "--quorum", "2",
                 "--metrics-file", str(prom)])
    assert code == 0, capsys.readouterr().err
    series = _series(prom)
    codes = {(s.labels["command"], s.labels.get("site")): s.value for s in series["tgflow_round_exit_code"]}
    assert codes == {("peft-run", "site-a"): 0, ("fed-aggregate", None): 0}
    outcomes = {s.labels["command"]: s.labels["outcome"] for s in series["tgflow_round_outcome"]}
    assert outcomes == {"peft-run": "update", "fed-aggregate": "packaged"}
    stages = {s.labels["stage"] for s in series["tgflow_round_stage_duration_seconds"]
              if s.labels["command"] == "fed-aggregate"}
    assert stages == {"prepare", "inputs", "screen", "merge", "release"}
    assert {s.labels["command"] for s in series["tgflow_round_last_success_timestamp_seconds"]} == \
        {"peft-run", "fed-aggregate"}
