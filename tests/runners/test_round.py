"""`tgflow peft run` end to end, through the real CLI, on real models."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import tgsp
from tgflow_cli.main import main
from tgsp.keyring import Keyring
from runners.data.feeds import Example
from runners.data.neardup import near_key
from tgsp.package import open_package

from tests.helpers import PASS, plaintext_at_rest

ROOT = Path(__file__).resolve().parents[2]


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def unpack_adapter(w, pkg: Path, dest: Path) -> Path:
    kr = Keyring(w.root / "home")
    tgsp.unpack(pkg, dest, kr.trust_policy(), identities=kr.identities("operator", lambda: PASS))
    return dest


def adapter_digest(folder: Path) -> str:
    return hashlib.sha256((folder / "adapter_model.safetensors").read_bytes()).hexdigest()


def test_round_end_to_end(workspace, capsys, tiny_model):
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    code, out, err = run(capsys, "peft", "run", "--spec", workspace.spec(), "--json")
    assert code == 0, err
    report = json.loads(out)
    pkg = Path(report["package"])
    assert report["outcome"] == "packaged" and report["version"] == 1
    # the package verifies, through the CLI as a user would
    assert run(capsys, "tgsp", "verify", pkg)[0] == 0
    # it unpacks with the recipient key to a standard PEFT folder
    adapter = unpack_adapter(workspace, pkg, workspace.root / "adapter")
    assert {"adapter_config.json", "adapter_model.safetensors"} <= {p.name for p in adapter.iterdir()}
    base = AutoModelForCausalLM.from_pretrained(tiny_model)
    x = torch.tensor([[1, 50, 60, 70, 80]])
    with torch.no_grad():
        before = base(input_ids=x).logits.clone()
        tuned = PeftModel.from_pretrained(base, adapter)
        after = tuned(input_ids=x).logits
    assert not torch.allclose(before, after), "the adapter must change the model's outputs"
    # the evidence chain holds the novelty, metrics, evaluation, forgetting and environment
    with open_package(pkg) as p:
        events = {e["type"]: e["data"] for e in p.evidence}
        prov = p.provenance
    assert {"tgflow.round.start", "tgflow.inputs", "tgflow.novelty", "tgflow.training", "tgflow.evaluation",
            "tgflow.forgetting", "tgflow.privacy", "tgflow.round.end", "tgflow.build", "tgflow.sign"} <= set(events)
    rows = [json.loads(x) for x in (workspace.root / "feeds" / "support-tickets.jsonl").read_text().splitlines()[:64]]
    keys = [near_key(Example(r["prompt"], r["completion"])) for r in rows]
    assert events["tgflow.novelty"]["near_duplicates"] == len(keys) - len(set(keys)) > 0  # same ticket, other number
    assert events["tgflow.novelty"]["novel"] == len(set(keys))
    assert events["tgflow.training"]["steps"] == 6 and events["tgflow.training"]["tokens"] > 0
    assert "forgetting" in events["tgflow.forgetting"] and "eval_loss_after" in events["tgflow.evaluation"]
    assert events["tgflow.round.start"]["environment"]["torch"]
    assert len(events["tgflow.round.start"]["spec_sha256"]) == 64
    assert events["tgflow.inputs"]["base_model"]["files"]["model.safetensors"]
    assert prov["predicate"]["buildDefinition"]["resolvedDependencies"][0]["digest"]["sha256"]
    # the route moved on: history and version
    from runners.state.store import RouteStore

    log = RouteStore(workspace.state, "support").view()
    assert [r["version"] for r in log.releases()] == [1] and log.next_version() == 2
    assert log.releases()[0]["package_id"] == report["package_id"]
    # no absolute local path in the adapter's config; the card comes from the evidence
    cfg = json.loads((adapter / "adapter_config.json").read_text())
    assert cfg["base_model_name_or_path"] == tiny_model.name
    card = (adapter / "README.md").read_text()
    assert "route `support`, version `1`" in card and events["tgflow.inputs"]["base_model"]["sha256"] in card
    assert str(workspace.root) not in card + json.dumps(cfg)
    assert not (workspace.state / "checkpoint").exists()


def test_same_spec_gives_the_same_adapter_bytes(workspace, capsys):
    digests = []
    for i in range(2):
        spec = workspace.spec(f"s{i}.json", output__path=f"out/a{i}.tgsp", output__state_dir=f"state{i}")
        assert run(capsys, "peft", "run", "--spec", spec)[0] == 0
        digests.append(adapter_digest(unpack_adapter(workspace, workspace.root / f"out/a{i}.tgsp", workspace.root / f"u{i}")))
    assert digests[0] == digests[1]


def test_second_round_on_the_same_data_is_skipped(workspace, capsys):
    spec = workspace.spec(policy={"novelty_threshold": 0.01, "min_novel_examples": 8, "forgetting_budget": 10.0,
                                  "eval_fraction": 0.25})
    assert run(capsys, "peft", "run", "--spec", spec)[0] == 0
    pkg = workspace.root / "out" / "adapter.tgsp"
    first = pkg.read_bytes()
    code, out, err = run(capsys, "peft", "run", "--spec", spec, "--json")
    assert code == 10, err
    assert len(out.strip().splitlines()) == 1  # one compact JSON object, the last line
    doc = json.loads(out.strip().splitlines()[-1])
    assert doc["error"]["exit_code"] == 10 and "novel" in doc["error"]["message"]
    assert doc["ok"] is False and doc["outcome"] == "skipped-low-novelty" and doc["novelty"]["novel"] == 0
    code, out, _ = run(capsys, "peft", "run", "--spec", spec, "--json", "--skip-ok", "--pretty")
    assert code == 0 and json.loads(out)["ok"] is True and out.count("\n") > 3  # --pretty indents
    assert pkg.read_bytes() == first  # no new package
    reports = sorted((workspace.state / "rounds").glob("*skipped-low-novelty.evidence.jsonl"))
    assert reports, "a skipped round leaves an evidence record"
    from tgsp.evidence import parse_jsonl

    events = parse_jsonl(reports[-1].read_bytes())
    assert [e["type"] for e in events][-2:] == ["tgflow.novelty", "tgflow.round.end"]
    assert events[-2]["data"]["duplicates"] + events[-2]["data"]["near_duplicates"] == 64


def test_forgetting_budget_rejects_without_a_package(workspace, capsys):
    spec = workspace.spec(base_model_ref=str(ROOT / "examples" / "tiny-base"),
                          policy={"novelty_threshold": 0.0, "min_novel_examples": 8, "forgetting_budget": 0.0,
                                  "eval_fraction": 0.25},
                          training={"steps": 8, "batch_size": 8, "learning_rate": 0.02, "seed": 1, "max_seq_len": 64})
    code, out, err = run(capsys, "peft", "run", "--spec", spec, "--json")
    assert code == 11 and "exceeds the budget" in err and "hint: try policy.replay_fraction" in err
    doc = json.loads(out.strip().splitlines()[-1])  # the round's numbers, not only an error object
    assert doc["outcome"] == "rejected-forgetting" and doc["forgetting"]["forgetting"] > 0
    assert doc["evaluation"]["eval_loss_after"] is not None and doc["error"]["exit_code"] == 11
    assert not (workspace.root / "out" / "adapter.tgsp").exists()
    report = json.loads(next((workspace.state / "rounds").glob("*rejected-forgetting.report.json")).read_text())
    assert report["forgetting"]["forgetting"] > 0 and report["forgetting"]["budget"] == 0.0
    from runners.state.store import RouteStore

    log = RouteStore(workspace.state, "support").view()
    assert log.releases() == [] and [r["outcome"] for r in log.rounds()] == ["rejected-forgetting"]
    assert not (workspace.state / "novelty").exists()  # nothing became "seen"


def test_evaluation_gate_rejects_without_a_package(workspace, capsys):
    spec = workspace.spec(policy={"novelty_threshold": 0.0, "min_novel_examples": 8, "forgetting_budget": 10.0,
                                  "eval_fraction": 0.25, "gate": {"max_eval_loss": 0.001}})
    code, _, err = run(capsys, "peft", "run", "--spec", spec)
    assert code == 12 and "max_eval_loss" in err and "hint: it did not learn enough" in err
    assert not (workspace.root / "out" / "adapter.tgsp").exists()


@pytest.mark.parametrize("over,code,needle", [
    ({"training": {"steps": 0}}, 2, "training.steps"),
    ({"base_model_ref": "./no-such-model"}, 2, "no-such-model"),
    ({"feed": {"type": "jsonl", "uri": "feeds/missing.jsonl"}}, 2, "missing.jsonl"),
    ({"output__recipients": ["nobody"]}, 3, "nobody"),
    ({"output__path": "feeds/reference.jsonl/a.tgsp"}, 5, "a file of that name exists"),
])
def test_bad_input_is_clear_and_writes_nothing(workspace, capsys, over, code, needle):
    got, _, err = run(capsys, "peft", "run", "--spec", workspace.spec(**over))
    assert got == code and needle in err
    assert list((workspace.root / "out").iterdir()) == []


def test_corrupt_feed_row_is_named(workspace, capsys):
    with open(workspace.root / "feeds" / "support-tickets.jsonl", "a") as f:
        f.write('{"oops": 1}\n')
    spec = workspace.spec(feed={"type": "jsonl", "uri": "feeds/support-tickets.jsonl"})
    got, _, err = run(capsys, "peft", "run", "--spec", spec)
    assert got == 2 and "support-tickets.jsonl:241" in err
    assert list((workspace.root / "out").iterdir()) == []


def test_wrong_signing_passphrase_exit_3_before_any_work(workspace, capsys, monkeypatch):
    monkeypatch.setenv("TGFLOW_PASSPHRASE", "wrong")
    got, _, err = run(capsys, "peft", "run", "--spec", workspace.spec())
    assert got == 3 and "wrong passphrase" in err
    assert list((workspace.root / "out").iterdir()) == []


def test_n2he_outside_a_federated_round_is_refused_with_the_fix(workspace, capsys):
    spec = workspace.spec(privacy={"mode": "n2he"})
    got, _, err = run(capsys, "peft", "run", "--spec", spec)
    assert got == 2 and "needs an n2he section" in err
    spec = workspace.spec(privacy={"mode": "n2he", "n2he": {"context": "he", "key_holder": "kh"}})
    got, _, err = run(capsys, "peft", "run", "--spec", spec)
    assert got == 2 and "federation" in err and "no federation section" in err
    assert list((workspace.root / "out").iterdir()) == []


# --- restart safety ---------------------------------------------------------------
def _cli(spec: Path, env: dict) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "tgflow_cli", "peft", "run", "--spec", str(spec)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_for_checkpoint(state: Path, proc: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if (state / "checkpoint" / "current.json").exists():
            return
        if proc.poll() is not None:
            raise AssertionError("run ended before its first checkpoint: " + proc.stderr.read())
        time.sleep(0.05)
    raise AssertionError("no checkpoint appeared")


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL])
def test_killed_round_resumes_to_the_same_adapter(workspace, capsys, sig):
    common = dict(training={"steps": 40, "batch_size": 8, "learning_rate": 0.01, "seed": 3, "max_seq_len": 64,
                            "checkpoint_every": 5})
    reference = workspace.spec("ref.json", output__path="out/ref.tgsp", output__state_dir="ref-state", **common)
    assert run(capsys, "peft", "run", "--spec", reference)[0] == 0
    want = adapter_digest(unpack_adapter(workspace, workspace.root / "out" / "ref.tgsp", workspace.root / "u-ref"))

    spec = workspace.spec("kill.json", output__path="out/kill.tgsp", **common)
    env = dict(os.environ)
    proc = _cli(spec, env)
    _wait_for_checkpoint(workspace.state, proc)
    proc.send_signal(sig)
    proc.wait(timeout=120)
    if sig == signal.SIGTERM:
        assert proc.returncode == 75, proc.stderr.read()
    else:
        assert proc.returncode == -signal.SIGKILL
    assert not (workspace.root / "out" / "kill.tgsp").exists()
    assert "training: step 1/40, loss " in proc.stderr.read()  # a log, not a terminal: plain lines as it goes
    # Nothing private at rest: a finished route (ref-state: seen, retained) and a cut round (its checkpoint).
    feeds = [json.loads(line) for f in (workspace.root / "feeds").glob("*.jsonl") for line in f.read_text().splitlines()]
    texts = [row[k] for row in feeds for k in ("prompt", "completion", "text") if isinstance(row.get(k), str)]
    assert list((workspace.state / "checkpoint").glob("step-*.sealed"))
    assert plaintext_at_rest([workspace.root / "out", workspace.root / "ref-state"], texts) == []
    code, out, err = run(capsys, "peft", "run", "--spec", spec, "--json")
    assert code == 0, err
    resumed = json.loads(out)["training"]["resumed_from_step"]
    assert resumed > 0 and f"training: resumed from step {resumed} of 40" in err
    events = [json.loads(line) for line in next((workspace.state / "rounds").glob("*packaged.evidence.jsonl"))
              .read_text().splitlines()]
    said = next(e["data"]["resumed"] for e in events if e["type"] == "tgflow.training")
    assert said["from_step"] == resumed and len(said["checkpoint_sha256"]) == 64
    assert "training: step 40/40" in err and "tokens/s, eta " in err and "evaluating the adapters: done in" in err
    got = adapter_digest(unpack_adapter(workspace, workspace.root / "out" / "kill.tgsp", workspace.root / "u-kill"))
    assert got == want


def test_input_and_output_roots_for_containers(workspace, capsys, tiny_model, tmp_path):
    """The layout export uses: spec in /config, inputs under one root, outputs under another."""
    import shutil

    config, work, out = tmp_path / "config", tmp_path / "work", tmp_path / "outroot"
    config.mkdir(), out.mkdir()
    shutil.copytree(workspace.root / "feeds", work / "feeds")
    spec = workspace.spec(output__path="anything/adapter.tgsp")
    (config / "run_spec.json").write_text(spec.read_text())
    code, outp, err = run(capsys, "peft", "run", "--spec", config / "run_spec.json", "--input-root", work,
                          "--output-root", out, "--json")
    assert code == 0, err
    assert json.loads(outp)["package"] == str(out / "adapter.tgsp")
    assert (out / ".tgflow-state" / "support" / "log.jsonl").exists()
