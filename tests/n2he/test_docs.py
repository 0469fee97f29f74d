"""docs/n2he.md, literally: its bash blocks run as written, in order, in a fresh HOME, with
tgflow on the PATH (from nothing to a decrypted, promoted release and the key holder's job)."""

from __future__ import annotations

import json
from pathlib import Path

from tests.helpers import run_doc_blocks

ROOT = Path(__file__).resolve().parents[2]


def test_the_n2he_walkthrough_runs_as_written(tmp_path):
    proc, work = run_doc_blocks(ROOT / "docs" / "n2he.md", tmp_path, blocks=2)
    out = proc.stdout
    assert "summed 3 encrypted updates" in out and "(no secret key here)" in out
    assert "decrypted the sum of 3 updates (key-holder custody" in out and "packaged" in out
    assert "production -> version 1" in out
    assert (work / "demo-out/n2he/support.tgsp").is_file()
    assert json.loads((work / "k8s-kh/job_spec.json").read_text())["args"][:2] == ["fed", "decrypt"]
    assert not (work / "homes/aggregator/he/route-he").exists()  # the aggregator never held the secret
