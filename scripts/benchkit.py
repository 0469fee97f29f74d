"""What every scripts/bench_*.py shares: the machine it ran on, the headline rows, --json.

Each benchmark prints, before anything else, the machine (cores, load average at start,
CPU, Python) and the baseline it measures against in the same run. With --json its
human-readable lines go to stderr and stdout carries one JSON document:

    {"bench": ..., "machine": {...}, "baseline": ..., "rows": [...], ...its own fields}

``rows`` are the headline figures, the same shape for every benchmark, so that
scripts/bench_all.sh can put all of them in one table:

    {"what": ..., "value": 1.23, "unit": "s", "ratio": 0.52, "target": "<= 0.6x", "ok": true}
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import sys
from typing import Any, Iterator


def machine() -> dict[str, Any]:
    """This machine, now: call it first, so the load average is the one the run started under."""
    try:
        usable = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        usable = os.cpu_count()
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), cpu)
    except OSError:
        pass
    return {"cores": os.cpu_count(), "usable_cores": usable, "load_at_start": [round(x, 2) for x in os.getloadavg()],
            "cpu": cpu, "python": platform.python_version(), "platform": platform.platform(terse=True)}


def describe(m: dict[str, Any]) -> str:
    load = " ".join(f"{x:.2f}" for x in m["load_at_start"])
    return (f"machine: {m['usable_cores']} usable of {m['cores']} cores ({m['cpu']}), load average {load} "
            f"at start; Python {m['python']}")


def row(what: str, value: float | None, unit: str = "", ratio: float | None = None, target: str = "",
        ok: bool | None = None) -> dict[str, Any]:
    return {"what": what, "value": value, "unit": unit, "ratio": ratio, "target": target, "ok": ok}


def add_json_flag(ap) -> None:
    ap.add_argument("--json", action="store_true", help="one JSON document on stdout (the text goes to stderr)")


@contextlib.contextmanager
def run(name: str, baseline: str, json_out: bool, *, quiet_text: bool = False) -> Iterator[dict[str, Any]]:
    """Print the machine and the baseline, run the body, and with --json emit its result.

    The body fills the yielded dict (``rows`` and anything else). ``quiet_text``: the body
    prints nothing itself in --json mode (it already keeps stdout for JSON)."""
    m = machine()
    result: dict[str, Any] = {"bench": name, "machine": m, "baseline": baseline, "rows": []}
    text = sys.stderr if json_out else sys.stdout
    print(describe(m), file=text)
    print(f"baseline (same run): {baseline}", file=text)
    if json_out and not quiet_text:
        with contextlib.redirect_stdout(sys.stderr):
            yield result
    else:
        yield result
    if json_out:
        sys.stdout.write(json.dumps(result, indent=2, default=str) + "\n")
        sys.stdout.flush()


def verdict(rows: list[dict[str, Any]]) -> int:
    """Exit 1 when a headline target is missed."""
    return 1 if any(r["ok"] is False for r in rows) else 0
