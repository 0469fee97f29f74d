"""docs/federated.md, literally: its bash blocks run as written, in order, in a fresh HOME,
with tgflow on the PATH (from nothing to a promoted federated release and its exported job)."""

from __future__ import annotations

from pathlib import Path

from tests.helpers import run_doc_blocks

ROOT = Path(__file__).resolve().parents[2]


def test_the_federated_walkthrough_runs_as_written(tmp_path):
    proc, work = run_doc_blocks(ROOT / "docs" / "federated.md", tmp_path, blocks=3)
    assert "federating costs" in proc.stdout and "centralized on the pooled data (360 steps)" in proc.stdout
    assert "merged 3 updates" in proc.stdout and "packaged" in proc.stdout and "production -> version 1" in proc.stdout
    assert (work / "demo-out/fed/support.tgsp").is_file() and (work / "k8s-agg/cronjob.yaml").is_file()
