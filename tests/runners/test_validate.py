"""`peft validate` predicts `peft run` (issue 30): on every case a round refuses before training,
validate fails too (exit 2), and a spec validate passes is not refused before training."""

from __future__ import annotations

import json

import pytest

from tests.runners.test_round import run

DP = {"max_grad_norm": 1.0, "noise_multiplier": 1.0, "target_delta": 1e-4}


def _case(w, case: str):
    if case == "no feed":
        return w.spec(feed=None)
    if case == "missing feed file":
        return w.spec(feed={"type": "jsonl", "uri": "feeds/nope.jsonl"})
    if case == "unknown signing key":
        return w.spec(output__signing_key="nobody")
    if case == "recipient is a signing key":
        return w.spec(output__recipients=["release"])
    if case == "missing model":
        return w.spec(base_model_ref=str(w.root / "no-model"))
    if case == "n2he without a federation":
        return w.spec(privacy={"mode": "n2he", "n2he": {"context": "he"}})
    if case == "dp budget exhausted":
        return w.spec(privacy={"mode": "dp", "dp": {**DP, "route_budget_epsilon": 0.001}},
                      eval={"type": "jsonl", "uri": "feeds/support-eval.jsonl", "max_examples": 16})
    if case == "federation start with init base":
        return w.spec(federation={"round": "r1", "aggregator": "operator", "sites": ["release"],
                                  "start": "sha256:" + "0" * 64},
                      training={"steps": 6, "batch_size": 8, "init": "base"})
    raise AssertionError(case)


CASES = ["no feed", "missing feed file", "unknown signing key", "recipient is a signing key", "missing model",
         "n2he without a federation", "dp budget exhausted", "federation start with init base"]


@pytest.mark.parametrize("case", CASES)
def test_validate_fails_wherever_run_refuses_before_training(workspace, capsys, case):
    spec = _case(workspace, case)
    code, out, _ = run(capsys, "peft", "validate", "--spec", spec, "--json")
    assert code == 2, out
    doc = json.loads(out)  # the checks, or (a spec that does not load) one error
    assert doc["ok"] is False and ([c for c in doc.get("checks", []) if not c["ok"]] or doc.get("error"))
    code, _, err = run(capsys, "peft", "run", "--spec", spec)
    assert code not in (0, 10, 11, 12), err  # refused, not trained
    assert not (workspace.state / "checkpoint").exists() and not (workspace.root / "out" / "adapter.tgsp").exists()


def test_a_spec_validate_passes_runs(workspace, capsys):
    spec = workspace.spec()
    code, out, _ = run(capsys, "peft", "validate", "--spec", spec, "--json")
    assert code == 0 and [c["name"] for c in json.loads(out)["checks"]][:2] == ["round", "output"]
    code, _, err = run(capsys, "peft", "run", "--spec", spec)
    assert code in (0, 12), err  # it trained (the tiny model may fail the gate: that is after training)
