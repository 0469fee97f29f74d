"""The README, literally: its quick-start commands run as written, in order,
in a fresh HOME, with tgflow on the PATH (issue 16)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def sections() -> dict[str, str]:
    text = (ROOT / "README.md").read_text()
    parts = re.split(r"^## (.+)$", text, flags=re.M)
    return {parts[i].strip(): parts[i + 1] for i in range(1, len(parts), 2)}


def bash_blocks(section: str) -> list[str]:
    return re.findall(r"```bash\n(.*?)```", section, flags=re.S)


def inline_commands(section: str) -> list[str]:
    prose = re.sub(r"```.*?```", "", section, flags=re.S)
    return [c for c in re.findall(r"`(tgflow [^`]+)`", prose) if "--pkcs11" not in c]  # tokens: tests/keys


def test_readme_quick_start_runs_as_written(tmp_path):
    s = sections()
    quick, round_ = s["From nothing to a verified package"], s["One learning round"]
    shutil.copytree(ROOT / "examples", tmp_path / "work" / "examples")
    env = {k: v for k, v in os.environ.items() if not k.startswith("TGFLOW_")}
    env.update(HOME=str(tmp_path / "home"), PATH=f"{Path(sys.executable).parent}:{env.get('PATH', '')}")
    (tmp_path / "home").mkdir()
    script = "\n".join(["set -euo pipefail", *bash_blocks(quick), *inline_commands(quick), *bash_blocks(round_)])
    assert script.count("tgflow ") >= 10
    proc = subprocess.run(["bash", "-c", script], cwd=tmp_path / "work", env=env, capture_output=True, text=True,
                          timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    work = tmp_path / "work"
    assert (work / "adapter.tgsp").is_file() and (work / "adapter-out" / "adapter_config.json").is_file()
    assert (work / "release.pub.json").is_file() and (work / "demo-out" / "support.tgsp").is_file()
    assert "VERIFIED" in proc.stdout and "packaged" in proc.stdout
