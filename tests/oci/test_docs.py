"""docs/registry.md, literally: its bash blocks run as written, in order, in a fresh HOME, with
tgflow on the PATH: a registry started on 127.0.0.1:5000, a package pushed and pulled, a route
registered and promoted in the registry, mirrored into a layout, and materialized for serving."""

from __future__ import annotations

import socket
import subprocess
from pathlib import Path

import pytest

from tests.helpers import run_doc_blocks

ROOT = Path(__file__).resolve().parents[2]


def test_the_registry_walkthrough_runs_as_written(tmp_path):
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", 5000))
        except OSError:
            pytest.fail("port 5000 is taken on this machine: the walkthrough's registry needs it")
    try:
        proc, work = run_doc_blocks(ROOT / "docs" / "registry.md", tmp_path, blocks=9)
    finally:  # the walkthrough stops its registry last; a failure before that must not leave it running
        pid = tmp_path / "work" / "registry-walkthrough" / "registry.pid"
        if pid.is_file():
            subprocess.run(["kill", pid.read_text().strip()], capture_output=True)
    out = proc.stdout
    assert "pushed oci://127.0.0.1:5000/tgflow/support:v1" in out and "v1 resolved to sha256:" in out
    assert "support: production -> version 1" in out and "support production: version 1 ->" in out
    assert "peft loaded served/support" in out
    assert "support production: version 2 ->" in out and "(previous: support-v2)" in out
    listed = out[out.index("(previous: support-v2)"):].split()
    assert {".tgflow-consumer.json", "support", "support-v1", "support-v2"} <= set(listed)
    assert "-> pulled.tgsp" in out and "-> offline.tgsp" in out and "-> exactly-v2.tgsp" in out
    assert not (work / "registry-walkthrough").exists()  # the walkthrough cleans up after itself
