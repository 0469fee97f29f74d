"""peft run under torch's elastic launcher (`--nproc-per-node 2`, gloo, real processes):
the same release as one process, rank 0 the only writer, the round's own exit codes, and
a SIGTERM mid-training that checkpoints once, exits 75 and resumes to the same adapter."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.helpers import PASS, pp

torch = pytest.importorskip("torch")


def _tgflow(ws, *args, wait=True):
    env = {**os.environ, "TGFLOW_HOME": str(ws.root / "home"), "TGFLOW_PASSPHRASE": PASS, "OMP_NUM_THREADS": "1"}
    env.pop("WORLD_SIZE", None)
    cmd = [sys.executable, "-m", "tgflow_cli", *args]
    if wait:
        return subprocess.run(cmd, env=env, cwd=ws.root, capture_output=True, text=True, timeout=300)
    return subprocess.Popen(cmd, env=env, cwd=ws.root, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _weights(ws, pkg: Path) -> dict:
    import tgsp
    from runners.learn.adapters import read_release
    from runners.state.keys import identities_for
    from safetensors.torch import load

    kr = tgsp.Keyring(ws.root / "home")
    return load(read_release(pkg, kr.trust_policy(kind="adapter"), identities_for(kr, ["operator"], pp)).weights)


def _max_rel(a: dict, b: dict) -> float:
    return max(float((a[k] - b[k]).abs().max() / a[k].abs().max().clamp(min=1e-12)) for k in a)


def _files(root: Path) -> list[str]:
    """The files under ``root``, with times and package ids masked."""
    import re

    return sorted(re.sub(r"sha256-[0-9a-f]{64}|\d{4}-\d\d-\d\dT\d{6}Z", "X", str(p.relative_to(root)))
                  for p in root.rglob("*") if p.is_file())


def test_two_processes_release_the_same_adapter_and_only_rank_0_writes(workspace):
    one = workspace.spec("one.json", output__path="out/one/adapter.tgsp")
    two = workspace.spec("two.json", output__path="out/two/adapter.tgsp")
    assert _tgflow(workspace, "peft", "run", "--spec", str(one)).returncode == 0
    proc = _tgflow(workspace, "peft", "run", "--spec", str(two), "--nproc-per-node", "2")
    assert proc.returncode == 0, proc.stderr[-3000:]
    a, b = (_weights(workspace, workspace.root / f"out/{n}/adapter.tgsp") for n in ("one", "two"))
    assert _max_rel(a, b) < 1e-5
    assert _files(workspace.root / "out/one") == _files(workspace.root / "out/two")  # the same files, written once
    # The round's own exit code comes back through the launcher: nothing new is 10, or 0 with --skip-ok.
    assert _tgflow(workspace, "peft", "run", "--spec", str(two), "--nproc-per-node", "2").returncode == 10
    assert _tgflow(workspace, "peft", "run", "--spec", str(two), "--nproc-per-node", "2", "--skip-ok").returncode == 0


def test_a_batch_that_does_not_divide_is_refused(workspace):
    spec = workspace.spec("odd.json", training__batch_size=9)
    proc = _tgflow(workspace, "peft", "run", "--spec", str(spec), "--nproc-per-node", "2")
    assert proc.returncode == 2 and "does not divide among 2 processes" in proc.stderr
    assert not (workspace.root / "out/adapter.tgsp").exists()


def test_sigterm_checkpoints_once_exits_75_and_resumes_to_the_same_adapter(workspace):
    over = dict(training__steps=300, training__checkpoint_every=10)
    whole = workspace.spec("whole.json", output__path="out/whole/adapter.tgsp", **over)
    cut = workspace.spec("cut.json", output__path="out/cut/adapter.tgsp", **over)
    assert _tgflow(workspace, "peft", "run", "--spec", str(whole), "--nproc-per-node", "2").returncode == 0
    proc = _tgflow(workspace, "peft", "run", "--spec", str(cut), "--nproc-per-node", "2", wait=False)
    pointer = workspace.root / "out/cut/.tgflow-state/support/checkpoint/current.json"
    deadline = time.monotonic() + 120
    while not pointer.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)  # as Kubernetes stops a pod: to the launcher, which passes it on
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 75, err[-2000:]
    assert not (workspace.root / "out/cut/adapter.tgsp").exists()
    assert _tgflow(workspace, "peft", "run", "--spec", str(cut), "--nproc-per-node", "2").returncode == 0
    a, b = (_weights(workspace, workspace.root / f"out/{n}/adapter.tgsp") for n in ("whole", "cut"))
    assert _max_rel(a, b) < 1e-5


def test_dp_under_two_processes_gives_the_same_epsilon_and_adapter(workspace):
    import json

    dp = {"mode": "dp", "dp": {"max_grad_norm": 1.0, "noise_multiplier": 1.0, "target_delta": 1e-5}}
    over = dict(privacy=dp, eval={"type": "jsonl", "uri": "feeds/reference.jsonl", "max_examples": 16})
    reports = {}
    for name, procs in (("dp1", "1"), ("dp2", "2")):
        spec = workspace.spec(f"{name}.json", output__path=f"out/{name}/adapter.tgsp", **over)
        env_seed = {"TGFLOW_DP_TEST_SEED": "11"}
        os.environ.update(env_seed)
        try:
            proc = _tgflow(workspace, "peft", "run", "--spec", str(spec), "--nproc-per-node", procs, "--json")
        finally:
            os.environ.pop("TGFLOW_DP_TEST_SEED")
        assert proc.returncode == 0, proc.stderr[-2000:]
        reports[name] = json.loads(proc.stdout.strip().splitlines()[-1])
    one, two = reports["dp1"]["privacy"], reports["dp2"]["privacy"]
    assert one["epsilon"] == two["epsilon"] and one["sample_rate"] == two["sample_rate"]
    [entry] = json.loads((workspace.root / "out/dp2/.tgflow-state/support/privacy-ledger.json").read_text())["entries"]
    assert entry["processes"] == 2 and entry["sample_rate"] == one["sample_rate"] and entry["epsilon"] == two["epsilon"]
    a, b = (_weights(workspace, workspace.root / f"out/{n}/adapter.tgsp") for n in ("dp1", "dp2"))
    assert _max_rel(a, b) < 1e-5  # one global sample, the noise once: the same mechanism
