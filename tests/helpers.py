"""Helpers shared by the tests (importable as tests.helpers)."""

from __future__ import annotations

import io
import shutil
import sys
from datetime import datetime, timezone
from pathlib import Path

PASS = "correct horse battery staple"


def pp() -> str:
    return PASS


def fixed(*args) -> callable:
    moment = datetime(*args, tzinfo=timezone.utc)
    return lambda: moment


def make_adapter(folder: Path, *, weights: int = 50_000, seed: int = 0) -> Path:
    """A PEFT-shaped folder: config, weights blob, a nested file, an empty file."""
    import random

    rng = random.Random(seed)
    (folder / "nested").mkdir(parents=True, exist_ok=True)
    (folder / "adapter_config.json").write_text('{"peft_type": "LORA", "r": 8, "lora_alpha": 16}\n')
    (folder / "adapter_model.safetensors").write_bytes(rng.randbytes(weights))
    (folder / "nested" / "README.md").write_text("tiny adapter\n")
    (folder / "nested" / "empty.bin").write_bytes(b"")
    return folder


def files_of(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def assemble(entries: list[tuple[str, bytes]]) -> bytes:
    """A canonical TGSP container holding exactly these entries, in this order."""
    from tgsp import archive

    buf = io.BytesIO()
    w = archive.Writer(buf)
    for name, data in entries:
        w.add(name, data)
    w.close()
    return buf.getvalue()


def tgflow_exe() -> list[str]:
    """The installed console script (the real entry point), else python -m."""
    exe = shutil.which("tgflow", path=str(Path(sys.executable).parent)) or shutil.which("tgflow")
    return [exe] if exe else [sys.executable, "-m", "tgflow_cli"]


def cli(capsys, *argv) -> tuple[int, str, str]:
    """The real entry point in-process: (exit code, stdout, stderr)."""
    from tgflow_cli.main import main

    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def run_doc_blocks(doc: Path, tmp_path: Path, blocks: int, timeout: int = 600):
    """A doc's bash blocks, literally, in order, in a fresh HOME with tgflow on the PATH, from a
    copy of examples/ (docs/federated.md, docs/n2he.md). Returns (completed process, work dir)."""
    import os
    import re
    import subprocess

    found = re.findall(r"```bash\n(.*?)```", doc.read_text(), flags=re.S)
    assert len(found) == blocks
    root = doc.parents[1]
    work = tmp_path / "work"
    shutil.copytree(root / "examples", work / "examples", ignore=shutil.ignore_patterns("demo-out"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("TGFLOW_")}
    env.update(HOME=str(tmp_path / "home"), PATH=f"{Path(sys.executable).parent}:{env.get('PATH', '')}")
    (tmp_path / "home").mkdir()
    proc = subprocess.run(["bash", "-c", "set -euo pipefail\n" + "\n".join(found)], cwd=work, env=env,
                          capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc, work


def plaintext_at_rest(roots: list[Path], texts: list[str]) -> list[str]:
    """Every file under ``roots`` that holds a safetensors header, a torch/zip archive or one of
    ``texts`` (in UTF-8 or as JSON escapes it): what must never be at rest unencrypted."""
    import json

    needles = {b'"data_offsets"': "a safetensors header", b"PK\x03\x04": "a zip (torch) archive"}
    for t in texts:
        if len(t.strip()) >= 16:
            needles[t.strip().encode()] = f"feed text {t.strip()[:30]!r}"
            needles[json.dumps(t.strip())[1:-1].encode()] = f"feed text {t.strip()[:30]!r} (JSON)"
    found = []
    for root in roots:
        for p in sorted(Path(root).rglob("*")):
            if p.is_file() and not p.is_symlink():
                data = p.read_bytes()
                found += [f"{p}: {what}" for needle, what in needles.items() if needle in data]
    return found


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_open(port: int, seconds: float = 20.0) -> bool:
    """Whether a server the test started listens on 127.0.0.1:``port`` within ``seconds``."""
    import socket
    import time

    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return True
        except OSError:
            time.sleep(0.05)
    return False

