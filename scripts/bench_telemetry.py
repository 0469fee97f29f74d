"""What telemetry costs a round: the textfile write (merge under a lock, fsync, rename) against
prometheus-client's own write_to_textfile of the same families, with 1, 100 and 1000 routes
sharing the file; and building the public view and its families. Prints the machine, the
baseline and the ratio; --json for one object.

    .venv/bin/python scripts/bench_telemetry.py [--repeat 30] [--json]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import benchkit  # noqa: E402

from prometheus_client import write_to_textfile  # noqa: E402

from runners.telemetry import prom  # noqa: E402
from runners.telemetry.observe import Stage  # noqa: E402
from runners.telemetry.record import RoundRecord, public  # noqa: E402


def record(route: str) -> RoundRecord:
    now = time.time()
    stages = [Stage(n, int((now - 9 + k) * 1e9), int((now - 8 + k) * 1e9), 0, True)
              for k, n in enumerate(("prepare", "inputs", "select", "plan", "train", "evaluate", "release"))]
    m = {"exact_match": 0.5, "choice_accuracy": 0.7, "loss": 1.2}
    report = {"version": 3, "package_id": "sha256:" + "ab" * 32, "novelty": {"examples": 64, "novel": 60},
              "evaluation": {"base": m, "candidate": m, "previous_release": m}, "forgetting": {"forgetting": 0.01}}
    return RoundRecord("peft-run", route, "packaged", 0, now - 10, now, stages, report)


def timed(fn, repeat: int) -> float:
    fn()
    runs = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        runs.append(time.perf_counter() - t)
    return statistics.median(runs)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=30)
    benchkit.add_json_flag(ap)
    args = ap.parse_args()
    with benchkit.run("telemetry", "prometheus-client's own write_to_textfile of the same families", args.json) as out:
        _measure(out, args.repeat)
        print(f"public view + families of one round: {out['public_view_and_families_ms']} ms")
        print("routes in file | tgflow textfile (merge, lock, fsync, rename) | prometheus-client write_to_textfile | ratio")
        for r in out["by_routes"]:
            print(f"{r['routes_in_file']:>14} | {r['tgflow_ms']:>10.2f} ms | {r['write_to_textfile_ms']:>10.2f} ms | "
                  f"{r['ratio']:.2f}x")
        out["rows"] = [benchkit.row(f"metrics textfile, {r['routes_in_file']} route(s) in the file", r["tgflow_ms"] / 1e3,
                                    "s", r["ratio"]) for r in out["by_routes"]]
    return 0


def _measure(out: dict, repeat: int) -> None:
    pub = public(record("support"))
    out["public_view_and_families_ms"] = round(timed(lambda: prom.families(public(record("support"))), repeat) * 1e3, 3)
    out["by_routes"] = []
    with tempfile.TemporaryDirectory() as tmp:
        for routes in (1, 100, 1000):
            path, base = Path(tmp) / f"r{routes}.prom", Path(tmp) / f"b{routes}.prom"
            shared: list = []
            for k in range(routes - 1):  # the other routes' series, merged in memory and written once
                p = public(record(f"route-{k}"))
                shared = prom.merge(shared, prom.families(p), p.labels, replace_all=True)
            path.write_bytes(prom.render(shared))
            ours = timed(lambda: prom.write_textfile(path, pub), repeat)
            everything = prom.families(pub) if routes == 1 else [f for f in prom.read(path)[0]]
            baseline = timed(lambda: write_to_textfile(str(base), prom._registry(everything)), repeat)
            out["by_routes"].append({"routes_in_file": routes, "tgflow_ms": round(ours * 1e3, 3),
                                     "write_to_textfile_ms": round(baseline * 1e3, 3), "ratio": round(ours / baseline, 2)})


if __name__ == "__main__":
    sys.exit(main())
