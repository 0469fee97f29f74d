"""docs/federated.md, literally: its bash blocks run as written, in order, in a fresh HOME,
with tgflow on the PATH (from nothing to a promoted federated release and its exported job)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_the_federated_walkthrough_runs_as_written(tmp_path):
    blocks = re.findall(r"```bash\n(.*?)```", (ROOT / "docs" / "federated.md").read_text(), flags=re.S)
    assert len(blocks) == 2
    shutil.copytree(ROOT / "examples", tmp_path / "work" / "examples", ignore=shutil.ignore_patterns("demo-out"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("TGFLOW_")}
    env.update(HOME=str(tmp_path / "home"), PATH=f"{Path(sys.executable).parent}:{env.get('PATH', '')}")
    (tmp_path / "home").mkdir()
    proc = subprocess.run(["bash", "-c", "set -euo pipefail\n" + "\n".join(blocks)], cwd=tmp_path / "work", env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    work = tmp_path / "work"
    assert "merged 3 updates" in proc.stdout and "packaged" in proc.stdout and "production -> version 1" in proc.stdout
    assert (work / "demo-out/fed/support.tgsp").is_file() and (work / "k8s-agg/cronjob.yaml").is_file()
