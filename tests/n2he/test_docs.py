"""docs/n2he.md, literally: its bash blocks run as written, in order, in a fresh HOME, with
tgflow on the PATH (from nothing to a decrypted, promoted release and the key holder's job)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_the_n2he_walkthrough_runs_as_written(tmp_path):
    blocks = re.findall(r"```bash\n(.*?)```", (ROOT / "docs" / "n2he.md").read_text(), flags=re.S)
    assert len(blocks) == 2
    shutil.copytree(ROOT / "examples", tmp_path / "work" / "examples", ignore=shutil.ignore_patterns("demo-out"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("TGFLOW_")}
    env.update(HOME=str(tmp_path / "home"), PATH=f"{Path(sys.executable).parent}:{env.get('PATH', '')}")
    (tmp_path / "home").mkdir()
    proc = subprocess.run(["bash", "-c", "set -euo pipefail\n" + "\n".join(blocks)], cwd=tmp_path / "work", env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    out, work = proc.stdout, tmp_path / "work"
    assert "summed 3 encrypted updates" in out and "(no secret key here)" in out
    assert "decrypted the sum of 3 updates (key-holder custody" in out and "packaged" in out
    assert "production -> version 1" in out
    assert (work / "demo-out/n2he/support.tgsp").is_file()
    assert json.loads((work / "k8s-kh/job_spec.json").read_text())["args"][:2] == ["fed", "decrypt"]
    assert not (work / "homes/aggregator/he/route-he").exists()  # the aggregator never held the secret
