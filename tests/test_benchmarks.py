"""The benchmark harness: every scripts/bench_*.py takes --json, and bench_table.py turns
their documents into one table that marks a miss (and exits 1)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BENCHES = sorted((ROOT / "scripts").glob("bench_*.py"))


@pytest.mark.parametrize("script", [b for b in BENCHES if b.name != "bench_table.py"], ids=lambda p: p.stem)
def test_every_benchmark_takes_json(script):
    res = subprocess.run([sys.executable, str(script), "--help"], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0 and "--json" in res.stdout, res.stderr[-1000:]
    assert "benchkit" in script.read_text()  # the machine line and the JSON shape come from one place


def test_the_table_shows_each_figure_and_fails_on_a_miss(tmp_path):
    sys.path.insert(0, str(ROOT / "scripts"))
    import benchkit

    m = benchkit.machine()
    assert m["usable_cores"] >= 1 and len(m["load_at_start"]) == 3
    ok = {"bench": "a", "machine": m, "baseline": "x", "rows": [benchkit.row("fast thing", 0.5, "s", 0.55, "<= 0.6x", True)]}
    (tmp_path / "a.json").write_text(json.dumps(ok))
    (tmp_path / "a.rc").write_text("0\n")
    run = lambda: subprocess.run([sys.executable, str(ROOT / "scripts" / "bench_table.py"), str(tmp_path)],  # noqa: E731
                                 capture_output=True, text=True, timeout=60)
    res = run()
    assert res.returncode == 0 and "| a | fast thing | 0.5 s | 0.55x | <= 0.6x | pass |" in res.stdout
    bad = dict(ok, bench="b", rows=[benchkit.row("slow thing", 2.0, "s", 1.3, "<= 1.2x", False)])
    (tmp_path / "b.json").write_text(json.dumps(bad))
    (tmp_path / "b.rc").write_text("1\n")
    (tmp_path / "c.rc").write_text("137\n")  # killed: no document
    res = run()
    assert res.returncode == 1
    assert "| b | slow thing | 2 s | 1.3x | <= 1.2x | MISS |" in res.stdout
    assert "| c | did not finish (exit 137)" in res.stdout
    assert (tmp_path / "table.md").read_text().strip() == res.stdout.strip()
