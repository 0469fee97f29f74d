"""Issue 10, items 1 and 7 for peft run, through the installed console script."""

from __future__ import annotations

import json
import re
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.helpers import PASS, tgflow_exe

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    root = tmp_path_factory.mktemp("hygiene")
    env = {**os.environ, "TGFLOW_HOME": str(root / "home"), "TGFLOW_PASSPHRASE": PASS}
    env.pop("CI", None)
    for argv in (["key", "generate", "release"], ["key", "generate", "operator", "--type", "recipient"]):
        subprocess.run(tgflow_exe() + argv, env=env, check=True, capture_output=True)
    return root, env


def test_peft_run_json_keeps_stderr_free_of_library_noise(home):
    root, env = home
    proc = subprocess.run(tgflow_exe() + ["peft", "run", "--spec", str(ROOT / "examples" / "run_spec.json"),
                                          "--output-root", str(root / "out"), "--json"],
                          env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["outcome"] == "packaged"
    # a CronJob's log: tgflow's own progress lines (issue 30), and no tqdm bar, no FutureWarning, nothing else
    ours = re.compile(r"(loading the base model|scoring novelty|evaluating the adapters)( \.\.\.|: done in [0-9.]+ s)"
                      r"|training: step \d+/100(, [0-9.]+k? tokens/s, eta \d+:\d\d)?, loss [0-9.]+")
    lines = proc.stderr.splitlines()
    assert lines and all(ours.fullmatch(line) for line in lines), proc.stderr
    quiet = subprocess.run(tgflow_exe() + ["-q", "peft", "run", "--spec", str(ROOT / "examples" / "run_spec.json"),
                                           "--output-root", str(root / "out-q"), "--json"],
                           env=env, capture_output=True, text=True, timeout=600)
    assert quiet.returncode == 0 and quiet.stderr == "", quiet.stderr


def test_two_sigterms_during_start_up_never_exit_0(home):
    """Signalled while it loads the model (it says so on stderr: no fixed sleep, which a loaded
    2-core machine outran), tgflow stops with a signal's exit code, never 0 and never -15."""
    root, env = home
    proc = subprocess.Popen(tgflow_exe() + ["peft", "run", "--spec", str(ROOT / "examples" / "run_spec.json"),
                                            "--output-root", str(root / "out2"), "--json"],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    first = proc.stderr.readline()  # blocks until the round starts loading: handlers are in place by then
    assert first.startswith(b"loading the base model"), first
    proc.send_signal(signal.SIGTERM)
    time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    proc.communicate(timeout=600)
    assert proc.returncode in (75, 130, 143), proc.returncode
    assert not (root / "out2" / "support.tgsp").exists()
