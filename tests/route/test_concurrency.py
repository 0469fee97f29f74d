"""Two `peft run`s started together on one DP route: exactly one trains, the other
exits 73 ("route busy") and changes nothing; the ledger's route ε is the true
composition of what ran (checked against Google's dp-accounting)."""

from __future__ import annotations

import json
import os
import subprocess

import pytest

from tests.helpers import tgflow_exe

dpa = pytest.importorskip("dp_accounting")

DP = {"mode": "dp", "dp": {"max_grad_norm": 1.0, "noise_multiplier": 1.0, "target_delta": 1e-4}}
TRAIN = {"steps": 60, "batch_size": 8, "learning_rate": 0.01, "seed": 3, "max_seq_len": 64, "checkpoint_every": 30}


def _spec(w, name: str, rows: str):
    return w.spec(name, privacy=DP, training=TRAIN, feed={"type": "jsonl", "uri": rows},
                  eval={"type": "jsonl", "uri": "feeds/support-eval.jsonl", "max_examples": 16})


def _pld(events, delta: float) -> float:
    acc = dpa.pld.PLDAccountant()
    for e in events:
        acc.compose(dpa.PoissonSampledDpEvent(e["sample_rate"], dpa.GaussianDpEvent(e["noise_multiplier"])), e["steps"])
    return acc.get_epsilon(delta)


def test_two_rounds_started_together_one_trains_one_is_busy(workspace):
    feeds = workspace.root / "feeds"
    rows = (feeds / "support-tickets.jsonl").read_text().splitlines()
    (feeds / "a.jsonl").write_text("\n".join(rows[:100]) + "\n")
    (feeds / "b.jsonl").write_text("\n".join(rows[100:200]) + "\n")
    spec = _spec(workspace, "a.json", "feeds/a.jsonl")
    env = {**os.environ, "TGFLOW_DP_TEST_SEED": "5"}
    procs = [subprocess.Popen([*tgflow_exe(), "peft", "run", "--spec", str(spec), "--json"], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    results = [(p.wait(timeout=300), *p.communicate()) for p in procs]
    codes = sorted(code for code, _, _ in results)
    assert codes == [0, 73], results
    busy = next(r for r in results if r[0] == 73)
    doc = json.loads(busy[1].strip().splitlines()[-1])  # one compact object on the last line, as for 10-13
    assert doc["error"]["exit_code"] == 73 and "route support is busy" in doc["error"]["message"]
    state = workspace.state
    ledger = json.loads((state / "privacy-ledger.json").read_text())
    assert len(ledger["entries"]) == 1 and ledger["entries"][0]["outcome"] == "packaged"  # nothing of the busy one
    log = [json.loads(x) for x in (state / "log.jsonl").read_text().splitlines()]
    assert [r["data"]["outcome"] for r in log if r["type"] == "tgflow.route.round"] == ["packaged"]
    # a second round on new data, after the first: the ledger composes both, as dp-accounting does
    code = subprocess.run([*tgflow_exe(), "peft", "run", "--spec", str(_spec(workspace, "b.json", "feeds/b.jsonl"))],
                          env=env, capture_output=True, text=True).returncode
    assert code == 0
    ledger = json.loads((state / "privacy-ledger.json").read_text())
    events = [ev for e in ledger["entries"] for ev in e["events"]]
    assert len(ledger["entries"]) == 2 and [ev["steps"] for ev in events] == [60, 60]
    truth = _pld(events, 1e-4)
    assert ledger["entries"][1]["route_epsilon"] == pytest.approx(truth, rel=0.01)
    assert ledger["entries"][1]["route_epsilon"] > ledger["entries"][0]["route_epsilon"] * 1.2
