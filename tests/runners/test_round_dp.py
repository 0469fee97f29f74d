"""`tgflow peft run` with privacy.mode "dp", end to end through the real CLI:
the package records the guarantee, and the route ledger enforces the budget."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tgflow_cli.main import main
from tgsp.package import open_package

from tests.runners.test_round import ROOT, run, unpack_adapter

DP = {"max_grad_norm": 1.0, "noise_multiplier": 1.0, "target_delta": 1e-4}


def dp_spec(w, name="spec.json", dp=None, **over):
    over.setdefault("training", {"steps": 6, "batch_size": 8, "learning_rate": 0.01, "seed": 3, "max_seq_len": 64,
                                 "checkpoint_every": 2})
    return w.spec(name, privacy={"mode": "dp", "dp": {**DP, **(dp or {})}},
                  eval={"type": "jsonl", "uri": "feeds/support-eval.jsonl", "max_examples": 16}, **over)


def ledger(w) -> dict:
    return json.loads((w.state / "privacy-ledger.json").read_text())


@pytest.fixture(autouse=True)
def _test_seed(monkeypatch):
    monkeypatch.setenv("TGFLOW_DP_TEST_SEED", "5")


@pytest.fixture(autouse=True)
def _feed_without_eval_leaks(workspace):
    """The round drops training tickets that equal an eval ticket apart from numbers (leakage);
    these tests count N exactly, so their feed copy holds none (checked: N stays 64 per slice)."""
    from runners.data.feeds import Example
    from runners.data.neardup import near_key

    feeds = workspace.root / "feeds"
    held = {near_key(Example(r["prompt"], r["completion"])) for r in map(json.loads,
            (feeds / "support-eval.jsonl").read_text().splitlines()[:16])}
    rows = [line for line in (feeds / "support-tickets.jsonl").read_text().splitlines()
            if near_key(Example(json.loads(line)["prompt"], json.loads(line)["completion"])) not in held]
    assert len(rows) >= 192
    (feeds / "support-tickets.jsonl").write_text("\n".join(rows) + "\n")


def test_dp_round_packages_with_its_guarantee(workspace, capsys, tiny_model):
    from runners.privacy.accounting import DpEvent, epsilon

    code, out, err = run(capsys, "peft", "run", "--spec", dp_spec(workspace), "--json")
    assert code == 0, err
    report = json.loads(out)
    pv = report["privacy"]
    assert pv["mode"] == "dp" and pv["steps"] == 6 and pv["noise_multiplier"] == 1.0
    assert pv["sample_rate"] == pytest.approx(8 / 64)  # q = B / N, N = all 64 (eval is its own feed)
    assert pv["epsilon"] == pytest.approx(epsilon([DpEvent(1.0, 8 / 64, 6)], 1e-4), rel=1e-5)
    assert pv["route_epsilon"] == pv["epsilon"] and pv["accountant"] == "prv"
    assert pv["epsilon_rdp"] >= pv["epsilon"]  # RDP is the looser bound
    assert "NOT private" in pv["randomness"]  # the test seed is never passed off as private
    with open_package(report["package"], check_digests=True) as pkg:
        manifest = pkg.manifest
        by_type = {e["type"]: e["data"] for e in pkg.evidence}
    assert manifest["privacy"]["epsilon"] == pv["epsilon"] and manifest["privacy"]["route_epsilon"] == pv["route_epsilon"]
    code, out, err_inspect = run(capsys, "tgsp", "inspect", report["package"])
    assert code == 0 and f"DP-SGD with a TEST SEED (NOT private), epsilon {pv['epsilon']:.4g}" in out
    # Issue 10, item 7: a test-seeded round is never passed off as private, and what the
    # evidence withholds is withheld from the report and stdout too.
    assert manifest["privacy"]["private"] is False and "NOT private" in manifest["privacy"]["randomness"]
    assert "NOT private" in err_inspect and "NOT private" in err
    code, _, err_verify = run(capsys, "tgsp", "verify", report["package"])
    assert code == 0 and "NOT private" in err_verify
    assert "loss_first" not in report["training"] and "tokens" not in report["training"]
    for key in ("delta", "noise_multiplier", "sample_rate", "steps", "accountant"):
        assert manifest["privacy"][key] == pv[key]
    assert by_type["tgflow.privacy"]["epsilon"] == pv["epsilon"]
    training = by_type["tgflow.training"]
    # Nothing computed from private records outside the mechanism is released.
    assert "loss_first" not in training and "tokens" not in training and "seconds" not in training
    assert training["train_sha256"].startswith("hmac-sha256:")
    assert by_type["tgflow.inputs"]["feed"]["sha256"].startswith("hmac-sha256:")
    assert not (workspace.state / "novelty").exists()  # DP records never steer later rounds' selection
    assert oct((workspace.state / "audit-key.json").stat().st_mode & 0o777) == "0o600"
    assert not (workspace.state / "retained").exists()  # nor are they kept for replay
    entry = ledger(workspace)["entries"]
    assert len(entry) == 1 and entry[0]["status"] == "settled" and entry[0]["outcome"] == "packaged"
    assert entry[0]["events"] == [{"noise_multiplier": 1.0, "sample_rate": 0.125, "steps": 6}]
    # Every LoRA factor in the shipped adapter moved away from its initialisation (B starts at zero,
    # A at a seeded random draw): the silent failure where DP leaves weights untouched did not happen.
    import torch
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    from runners.spec import LoraSpec
    from runners.learn.train import add_lora

    shipped = load_file(str(unpack_adapter(workspace, Path(report["package"]), workspace.root / "a") /
                            "adapter_model.safetensors"))
    init = add_lora(AutoModelForCausalLM.from_pretrained(tiny_model), LoraSpec(r=4, alpha=8), 3).state_dict()
    assert len(shipped) == 8
    for name, tensor in shipped.items():
        start = init[name.replace(".weight", ".default.weight")]
        assert not torch.equal(tensor, start), f"{name} did not move"
    code, out, _ = run(capsys, "peft", "run", "--spec", dp_spec(workspace))  # the human output, too
    assert code == 0 and "withheld under DP" in out and "tokens/s" not in out and " -> " not in out.split("training:")[1].splitlines()[0]


def test_target_epsilon_is_calibrated_with_micro_batches(workspace, capsys):
    """Micro-batches of 4 rows, 2 per logical batch: the expected batch (and q) is 8 / 64."""
    spec = dp_spec(workspace, dp={"noise_multiplier": None, "target_epsilon": 4.0},
                   training={"steps": 6, "batch_size": 4, "gradient_accumulation": 2, "learning_rate": 0.01,
                             "seed": 3, "max_seq_len": 64})
    code, out, err = run(capsys, "peft", "run", "--spec", spec, "--json")
    assert code == 0, err
    pv = json.loads(out)["privacy"]
    assert 4.0 * 0.99 <= pv["epsilon"] <= 4.0
    assert pv["noise_multiplier_source"].startswith("calibrated")
    assert pv["expected_batch_size"] == 8 and pv["sample_rate"] == 0.125


def test_three_rounds_against_a_route_budget(workspace, capsys):
    from runners.privacy.accounting import DpEvent, epsilon

    one = epsilon([DpEvent(1.0, 0.125, 6)], 1e-4)
    two = epsilon([DpEvent(1.0, 0.125, 12)], 1e-4)
    budget = round((two + epsilon([DpEvent(1.0, 0.125, 15)], 1e-4)) / 2, 4)  # room for 2 rounds and half of a third
    feeds = workspace.root / "feeds"
    rows = (feeds / "support-tickets.jsonl").read_text().splitlines()
    for k in range(3):  # fresh data each round
        (feeds / f"round{k}.jsonl").write_text("\n".join(rows[64 * k: 64 * (k + 1)]) + "\n")
    spec = lambda k: dp_spec(workspace, f"spec{k}.json", dp={"route_budget_epsilon": budget},  # noqa: E731
                             feed={"type": "jsonl", "uri": f"feeds/round{k}.jsonl"})
    code, out, _ = run(capsys, "peft", "budget", "--spec", spec(0), "--json")
    fresh = json.loads(out)
    assert code == 0 and fresh["route_epsilon"] == 0 and fresh["rounds"] == {}
    assert fresh["next_round"]["outcome"] == "runs in full" and fresh["next_round"]["examples"] == 64
    assert run(capsys, "peft", "run", "--spec", spec(0))[0] == 0
    assert run(capsys, "peft", "run", "--spec", spec(1))[0] == 0
    code, out, _ = run(capsys, "peft", "budget", "--spec", spec(2), "--json")
    status = json.loads(out)
    assert code == 0 and status["rounds"] == {"packaged": 2}
    assert status["route_epsilon"] == pytest.approx(two, rel=1e-6)
    assert status["remaining_epsilon"] == pytest.approx(budget - two, abs=1e-5)
    predicted = status["next_round"]["steps_within_budget"]
    assert 0 < predicted < 6 and status["next_round"]["outcome"] == f"stops at step {predicted} (exit 13)"
    assert not (workspace.root / "out" / "adapter.tgsp.tmp").exists()
    pkg = workspace.root / "out" / "adapter.tgsp"
    before = pkg.read_bytes()
    code, out, err = run(capsys, "peft", "run", "--spec", spec(2), "--json")
    assert code == 13, err
    assert "privacy budget reached" in err and "stopped after" in err
    assert pkg.read_bytes() == before  # the last good package is untouched, nothing new promoted
    entries = ledger(workspace)["entries"]
    assert [e["outcome"] for e in entries] == ["packaged", "packaged", "privacy-budget-exhausted"]
    third = entries[2]["events"][0]["steps"]
    assert third == predicted  # peft budget predicted exactly where the round would stop
    spent = epsilon([DpEvent(1.0, 0.125, 12 + third)], 1e-4)
    assert spent <= budget < epsilon([DpEvent(1.0, 0.125, 12 + third + 1)], 1e-4)  # cut exactly at the budget
    assert two > one
    # A fourth round is refused before it trains, with the same code, and charges nothing.
    code, _, err = run(capsys, "peft", "run", "--spec", spec(2))
    assert code == 13 and "privacy budget exhausted" in err and "hint: tgflow peft budget shows what is left" in err
    entries = ledger(workspace)["entries"]
    assert entries[-1]["status"] == "refused" and entries[-1]["events"] == []
    code, out, _ = run(capsys, "peft", "budget", "--spec", spec(2))
    assert code == 13 and "refused (exit 13)" in out, out
    reports = sorted((workspace.state / "rounds").glob("*privacy-budget-exhausted.evidence.jsonl"))
    assert len(reports) == 2


def _cli(w, *args, env_extra=None):
    env = {**os.environ, "TGFLOW_HOME": str(w.root / "home"), "TGFLOW_PASSPHRASE": os.environ["TGFLOW_PASSPHRASE"],
           "TGFLOW_DP_TEST_SEED": "5", **(env_extra or {})}
    return subprocess.Popen([sys.executable, "-m", "tgflow_cli", *map(str, args)], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def test_ledger_survives_a_crash_mid_round(workspace):
    """SIGKILL during training: the pending charge stays; the re-run resumes
    under the same entry (no double charge) and settles it."""
    spec = dp_spec(workspace, training={"steps": 400, "batch_size": 8, "learning_rate": 0.01, "seed": 3,
                                        "max_seq_len": 64, "checkpoint_every": 5})
    proc = _cli(workspace, "peft", "run", "--spec", spec)
    ckpt = workspace.state / "checkpoint" / "current.json"
    deadline = time.time() + 120
    while not ckpt.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.2)
    assert ckpt.exists(), proc.communicate()[1].decode()[-2000:]
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    entries = ledger(workspace)["entries"]
    assert len(entries) == 1 and entries[0]["status"] == "pending"
    assert entries[0]["events"][0]["steps"] == 400  # charged in full until settled
    # The spent budget is visible while the round is pending (a new spec could not ignore it).
    from runners.privacy.ledger import Ledger

    assert Ledger.load(workspace.state, "support").spent(1e-4, "prv") > 0
    proc = _cli(workspace, "peft", "run", "--spec", spec, "--json")
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err.decode()[-2000:]
    report = json.loads(out)
    assert report["training"]["resumed_from_step"] > 0
    entries = ledger(workspace)["entries"]
    assert len(entries) == 1 and entries[0]["status"] == "settled" and entries[0]["events"][0]["steps"] == 400


def test_a_damaged_audit_key_stops_the_route(workspace, capsys):
    workspace.state.mkdir(parents=True)
    (workspace.state / "audit-key").write_text("not hex")
    code, _, err = run(capsys, "peft", "run", "--spec", dp_spec(workspace))
    assert code == 2 and "audit key" in err and "damaged" in err


def test_a_damaged_ledger_stops_the_route(workspace, capsys):
    workspace.state.mkdir(parents=True)
    (workspace.state / "privacy-ledger.json").write_text('{"format": "tgflow.privacy-ledger/1", "entries": [')
    code, _, err = run(capsys, "peft", "run", "--spec", dp_spec(workspace))
    assert code == 2 and "privacy ledger" in err and "unreadable" in err
    assert not (workspace.root / "out" / "adapter.tgsp").exists()


@pytest.mark.parametrize("over,dp,message", [
    ({"training": {"steps": 2, "batch_size": 8, "packing": True}}, {}, "packing"),
    ({}, {"target_delta": 0.05}, "not below 1/N"),
    ({"training": {"steps": 2, "batch_size": 128}}, {}, "larger than the 64 training examples"),
    ({}, {"noise_multiplier": None, "target_epsilon": 0.0001}, "out of reach"),
    ({}, {"noise_multiplier": 0}, "greater than 0"),
    ({}, {"noise_multiplier": 0.05}, "no meaningful guarantee"),
])
def test_bad_dp_settings_are_refused_before_training(workspace, capsys, over, dp, message):
    code, _, err = run(capsys, "peft", "run", "--spec", dp_spec(workspace, dp=dp, **over))
    assert code == 2, err
    assert message in err
    assert not (workspace.root / "out" / "adapter.tgsp").exists()
    assert not (workspace.state / "checkpoint").exists()


def test_dp_needs_a_separate_eval_feed(workspace, capsys):
    spec = workspace.spec(privacy={"mode": "dp", "dp": DP})
    code, _, err = run(capsys, "peft", "run", "--spec", spec)
    assert code == 2 and "needs an eval feed" in err


@pytest.mark.parametrize("seeded", [False, True])
def test_reproducible_only_in_test_mode(workspace, capsys, monkeypatch, seeded):
    """Without the test seed, the sampling and noise come from os.urandom and two
    runs differ; with it (tests only), the same spec gives the same adapter bytes."""
    import hashlib

    import tgsp
    from tgsp.keyring import Keyring
    from tests.helpers import PASS

    if not seeded:
        monkeypatch.delenv("TGFLOW_DP_TEST_SEED")
    digests = []
    for k in range(2):
        spec = dp_spec(workspace, f"s{k}.json", output={"path": f"out/a{k}.tgsp", "signing_key": "release",
                                                         "recipients": ["operator"], "state_dir": f"out/state{k}"})
        code, out, err = run(capsys, "peft", "run", "--spec", spec, "--json")
        assert code == 0, err
        assert (json.loads(out)["privacy"]["randomness"] == "os.urandom") is not seeded
        kr = Keyring(workspace.root / "home")
        dest = workspace.root / f"unpacked{k}"
        tgsp.unpack(workspace.root / "out" / f"a{k}.tgsp", dest, kr.trust_policy(),
                    identities=kr.identities("operator", lambda: PASS))
        digests.append(hashlib.sha256((dest / "adapter_model.safetensors").read_bytes()).hexdigest())
    assert (digests[0] == digests[1]) is seeded


def test_a_rejected_adapter_still_spends_its_epsilon(workspace, capsys):
    spec = dp_spec(workspace, policy={"novelty_threshold": 0.0, "min_novel_examples": 8, "forgetting_budget": 10.0,
                                      "gate": {"min_eval_improvement": 0.99}})
    code, _, err = run(capsys, "peft", "run", "--spec", spec)
    assert code == 12 and "under dp the noise is the usual cause" in err, err
    assert not (workspace.root / "out" / "adapter.tgsp").exists()
    [entry] = ledger(workspace)["entries"]
    assert entry["status"] == "settled" and entry["outcome"] == "rejected-eval-gate"
    assert entry["events"] == [{"noise_multiplier": 1.0, "sample_rate": 0.125, "steps": 6}] and entry["epsilon"] > 0
    [evidence] = (workspace.state / "rounds").glob("*rejected-eval-gate.evidence.jsonl")
    assert '"tgflow.privacy"' in evidence.read_text()


def test_sigterm_mid_dp_round_resumes_to_the_same_adapter(workspace, capsys):
    """The DP generators' state travels in the checkpoint: under the test seed, a
    round stopped by SIGTERM (exit 75) and resumed ends on the uninterrupted bytes,
    and the ledger holds one entry for it."""
    from tests.runners.test_round import _cli as popen_run, _wait_for_checkpoint, adapter_digest

    training = {"steps": 40, "batch_size": 8, "learning_rate": 0.01, "seed": 3, "max_seq_len": 64,
                "checkpoint_every": 5}
    reference = dp_spec(workspace, "ref.json", training=training,
                        output={"path": "out/ref.tgsp", "signing_key": "release", "recipients": ["operator"],
                                "state_dir": "ref-state"})
    assert run(capsys, "peft", "run", "--spec", reference)[0] == 0
    want = adapter_digest(unpack_adapter(workspace, workspace.root / "out" / "ref.tgsp", workspace.root / "u-ref"))
    spec = dp_spec(workspace, "kill.json", training=training,
                   output={"path": "out/kill.tgsp", "signing_key": "release", "recipients": ["operator"]})
    proc = popen_run(spec, dict(os.environ))
    _wait_for_checkpoint(workspace.state, proc)
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=120)
    assert proc.returncode == 75, proc.stderr.read()
    assert ledger(workspace)["entries"][0]["status"] == "pending"
    code, out, err = run(capsys, "peft", "run", "--spec", spec, "--json")
    assert code == 0, err
    resumed = json.loads(out)["training"]["resumed_from_step"]
    assert resumed > 0 and f"training: resumed from step {resumed} of 40" in err
    steps = [line for line in err.splitlines() if line.startswith("training: step")]
    assert steps and all("loss" not in line and "tokens" not in line for line in steps)  # private under DP
    got = adapter_digest(unpack_adapter(workspace, workspace.root / "out" / "kill.tgsp", workspace.root / "u-kill"))
    assert got == want
    [entry] = ledger(workspace)["entries"]
    assert entry["status"] == "settled" and entry["events"][0]["steps"] == 40
