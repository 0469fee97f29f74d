"""peft run's training under torchrun: 2 gloo processes on the CPU against one process with
the same global batch (real process groups, real training steps on a tiny Llama)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from runners.distributed import world as distributed  # noqa: E402
from tgsp.errors import InputError  # noqa: E402

WORKER = Path(__file__).with_name("ddp_worker.py")


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run(out: Path, mode: str, procs: int, **env) -> int:
    out.mkdir(parents=True, exist_ok=True)
    base = {**os.environ, "OMP_NUM_THREADS": "1", **env}
    base.pop("WORLD_SIZE", None)
    if procs == 1:
        cmd = [sys.executable, str(WORKER), str(out), mode]
    else:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(procs), "--master-addr",
               "127.0.0.1", "--master-port", str(_port()), str(WORKER), str(out), mode]
    return subprocess.run(cmd, env=base, capture_output=True, text=True, timeout=300).returncode


def _lora(out: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(out / "lora.safetensors"))


def _max_rel(a: dict, b: dict) -> float:
    return max(float((a[k] - b[k]).abs().max() / a[k].abs().max().clamp(min=1e-12)) for k in a)


@pytest.fixture(scope="module")
def single(tmp_path_factory):
    out = tmp_path_factory.mktemp("one")
    assert _run(out, "plain", 1) == 0
    return out


def test_two_processes_train_the_same_adapter_as_one(single, tmp_path):
    assert _run(tmp_path, "plain", 2) == 0
    assert _max_rel(_lora(single), _lora(tmp_path)) < 1e-5
    one, two = (json.loads((d / "result.json").read_text()) for d in (single, tmp_path))
    assert one["tokens"] == two["tokens"] and abs(one["losses"][-1] - two["losses"][-1]) < 1e-5
    assert set((tmp_path / "savers.txt").read_text().split()) == {"0"}  # only rank 0 wrote checkpoints


def test_dp_under_two_processes_samples_once_and_adds_the_noise_once(tmp_path):
    seed = {"TGFLOW_DP_TEST_SEED": "5"}
    assert _run(tmp_path / "one", "dp", 1, **seed) == 0 and _run(tmp_path / "two", "dp", 2, **seed) == 0
    assert _max_rel(_lora(tmp_path / "one"), _lora(tmp_path / "two")) < 1e-5
    stds = {}
    for procs in (1, 2):
        out = tmp_path / f"noise-{procs}"
        assert _run(out, "noise", procs, TGFLOW_DP_TEST_SEED=str(7 + procs)) == 0
        stds[procs] = json.loads((out / "result.json").read_text())
    for r in stds.values():  # sigma*C/B = 1/16, within 3 standard errors (SE of a std: std/sqrt(2n))
        assert abs(r["std"] - r["expected"]) < 3 * r["expected"] / (2 * r["n"]) ** 0.5, r
    assert stds[2]["std"] / stds[2]["expected"] < 1.2  # about 1.00x, not the 1.41x of noise on every rank


def test_a_sigterm_to_one_rank_stops_both_and_resumes_to_the_same_adapter(single, tmp_path):
    rc = _run(tmp_path, "plain", 2, STOP_RANK="1", STOP_AFTER="7")
    assert rc != 0 and (tmp_path / "interrupted-0").exists() and (tmp_path / "interrupted-1").exists()
    assert not (tmp_path / "lora.safetensors").exists()
    assert _run(tmp_path, "plain", 2) == 0
    assert json.loads((tmp_path / "result.json").read_text())["resumed_from"] == 4
    assert _max_rel(_lora(single), _lora(tmp_path)) < 1e-5
    assert set((tmp_path / "savers.txt").read_text().split()) == {"0"}


def test_bad_setups_get_clear_errors():
    assert distributed.open_world("cpu", {"WORLD_SIZE": "1"}) is None
    with pytest.raises(InputError, match="no rendezvous"):
        distributed.open_world("cpu", {"WORLD_SIZE": "2", "RANK": "0"})
    with pytest.raises(InputError, match="not an integer"):
        distributed.open_world("cpu", {"WORLD_SIZE": "two"})
    with pytest.raises(InputError, match="outside WORLD_SIZE"):
        distributed.open_world("cpu", {"WORLD_SIZE": "2", "RANK": "5", "MASTER_ADDR": "x", "MASTER_PORT": "1"})
    with pytest.raises(InputError, match="does not divide among 3 processes"):
        distributed.check_batch(distributed.World(0, 3, 0, "gloo"), 8)
    distributed.check_batch(distributed.World(0, 2, 0, "gloo"), 8)
    assert distributed.World(1, 3, 0, "gloo").share(list(range(8))) == [2, 3, 4]
