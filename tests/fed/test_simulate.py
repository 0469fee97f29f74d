"""`tgflow fed simulate`: the shipped federation's specs, run locally with throw-away keys, next
to the centralized baseline on the pooled data (small step counts: the numbers are for the bench)."""

from __future__ import annotations

import json
from pathlib import Path

from tests.fed.conftest import EXAMPLES
from tests.helpers import cli


def _small(tmp_path: Path, name: str, steps: int) -> Path:
    spec = json.loads((EXAMPLES / f"{name}.json").read_text())
    spec["training"]["steps"] = steps
    if "feed" in spec:
        spec["feed"]["max_examples"] = 32
    path = tmp_path / f"{name}.json"
    path.write_text(json.dumps(spec))
    return path


def test_simulate_prints_the_federation_next_to_its_pooled_baseline(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("TGFLOW_HOME", str(tmp_path / "untouched-home"))
    sites = [_small(tmp_path, f"fed_site-{s}", 3) for s in "ab"]
    code, out, err = cli(capsys, "fed", "simulate", *sites, "--spec", _small(tmp_path, "fed_aggregator", 3),
                         "--input-root", EXAMPLES, "--score-on", EXAMPLES / "feeds/support-eval.jsonl", "--json")
    assert code == 0, err
    r = json.loads(out)
    assert r["method"] == "exact" and r["sites"] == 2 and r["site_steps"] == [3, 3] and r["centralized_steps"] == 6
    assert r["centralized"]["train_examples"] == 64  # the two sites' 32 tickets each, pooled
    for row in (r["federated"], r["centralized"]):
        assert row["examples"] == 48 and 0 <= row["exact_match"] <= 1 and row["outcome"]
        lo, hi = row["exact_match_ci95"]
        assert lo <= row["exact_match"] <= hi
    for row in (r["federated"], r["centralized"]):  # scored apart on another feed, when released
        assert row["scored"] is None if row["outcome"] != "packaged" else row["scored"]["examples"] == 48
    assert r["gap_exact_match"] == round(r["centralized"]["exact_match"] - r["federated"]["exact_match"], 6)
    assert "site 1 of 2" in err and "centralized round" in err
    assert not (tmp_path / "untouched-home").exists()  # throw-away keys: the user's keyring is not touched


def test_simulate_refuses_n2he_and_says_what_to_run(tmp_path, capsys):
    code, _, err = cli(capsys, "fed", "simulate", EXAMPLES / "n2he_site-a.json", "--spec",
                       EXAMPLES / "n2he_aggregator.json")
    assert code == 2 and "ffa" in err
