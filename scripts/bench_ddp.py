#!/usr/bin/env python3
"""Benchmark a round on several processes against the same round on one, in the same run.

Each run is the real command, `tgflow peft run --json [--nproc-per-node P]`, on the
same spec, data, seed and global batch, twice:
- speed: the same CPU threads in all (OMP threads = cores / P), so the only difference is
  the split. Prints training tokens/s (from each round's report), the ratio against one
  process, scaling efficiency (ratio / P) and the wall time of the whole round;
- equivalence: one thread per process, and the largest relative difference between the
  released adapters (target < 1e-5). With different thread counts a matmul sums in a
  different order, which is not the split's doing (about 1e-4 after 60 steps here).

    python scripts/bench_ddp.py [--procs 1,2] [--steps N] [--json]

Targets: equivalence < 1e-5 everywhere. Speed on one CPU machine is not a goal (the
processes share its cores and gloo's all-reduce is the cost being measured); on GPUs
(NCCL, one process per GPU) the goal is a scaling efficiency of at least 0.9. Not yet
measured on GPUs.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))
import benchkit  # noqa: E402
PASS = "bench-ddp-passphrase"


def _tgflow(home: Path, *args: str, threads: int | None = None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("WORLD_SIZE", "RANK", "LOCAL_RANK")}
    env.update(TGFLOW_HOME=str(home), TGFLOW_PASSPHRASE=PASS)
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
    return subprocess.run([sys.executable, "-m", "tgflow_cli", *args], env=env, capture_output=True, text=True,
                          check=False)


def _workspace(tmp: Path, steps: int, batch: int) -> Path:
    shutil.copytree(ROOT / "examples", tmp / "examples", ignore=shutil.ignore_patterns("demo-out"))
    for args in (["key", "generate", "release"], ["key", "generate", "operator", "--type", "recipient"]):
        proc = _tgflow(tmp / "home", *args)
        if proc.returncode:
            sys.exit(proc.stderr)
    spec = json.loads((tmp / "examples" / "run_spec.json").read_text())
    spec["training"].update(steps=steps, batch_size=batch, checkpoint_every=10**6)
    spec["output"].update(signing_key="release", recipients=["operator"])
    path = tmp / "examples" / "bench_spec.json"
    path.write_text(json.dumps(spec))
    return path


def _training(report: dict) -> dict:
    """The round's training record, wherever the report nests it."""
    if isinstance(report, dict):
        if "tokens_per_second" in report:
            return report
        for value in report.values():
            found = _training(value)
            if found:
                return found
    return {}


def _adapter(home: Path, pkg: Path) -> dict:
    import tgsp
    from runners.learn.adapters import read_release
    from runners.state.keys import identities_for
    from safetensors.torch import load

    kr = tgsp.Keyring(home)
    return load(read_release(pkg, kr.trust_policy(kind="adapter"), identities_for(kr, ["operator"], lambda: PASS))
                .weights)


def _run(tmp: Path, spec: Path, procs: int, threads: int, tag: str) -> dict:
    out = tmp / f"out-{tag}-{procs}"
    t0 = time.perf_counter()
    proc = _tgflow(tmp / "home", "peft", "run", "--spec", str(spec), "--output-root", str(out), "--json",
                   *(["--nproc-per-node", str(procs)] if procs > 1 else []), threads=threads)
    wall = time.perf_counter() - t0
    if proc.returncode:
        sys.exit(f"peft run with {procs} process(es) exited {proc.returncode}: {proc.stderr[-2000:]}")
    training = _training(json.loads(proc.stdout.strip().splitlines()[-1]))
    return {"procs": procs, "tokens_per_second": training["tokens_per_second"], "train_seconds": training["seconds"],
            "round_seconds": round(wall, 2), "package": str(next(out.glob("*.tgsp")))}


def main() -> int:
    ap = argparse.ArgumentParser(description="several-process round benchmark (see module docstring)")
    ap.add_argument("--procs", default="1,2")
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--batch", type=int, default=16)
    benchkit.add_json_flag(ap)
    args = ap.parse_args()
    with benchkit.run("ddp", "the same round in one process, same run", args.json) as res:
        same = _measure(args, res)
    return 0 if same else 1


def _measure(args, res: dict) -> bool:
    counts = sorted({int(p) for p in args.procs.split(",")} | {1})
    cores = os.cpu_count() or 1
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        spec = _workspace(tmp, args.steps, args.batch)
        runs = [_run(tmp, spec, p, max(1, cores // p), "speed") for p in counts]
        same_threads = [_run(tmp, spec, p, 1, "equal") for p in counts]
        base = _adapter(tmp / "home", Path(same_threads[0]["package"]))
        for r, e in zip(runs, same_threads):
            other = _adapter(tmp / "home", Path(e["package"]))
            r["max_rel_diff"] = max(float((base[k] - other[k]).abs().max() / base[k].abs().max().clamp(min=1e-12))
                                    for k in base)
            del r["package"]
            r["ratio"] = r["tokens_per_second"] / runs[0]["tokens_per_second"]
            r["efficiency"] = r["ratio"] / r["procs"]
    same = all(r["max_rel_diff"] < 1e-5 for r in runs)
    res.update({"steps": args.steps, "batch": args.batch, "runs": runs, "equivalent": same})
    res["rows"] = [benchkit.row(f"round with {r['procs']} process(es), tokens/s", r["tokens_per_second"], "tokens/s",
                                r["ratio"], "same adapter", r["max_rel_diff"] < 1e-5) for r in runs]
    print(f"tiny base model, CPU ({cores} cores shared by all processes), {args.steps} steps, global batch {args.batch}")
    for r in runs:
        print(f"  {r['procs']} process(es): {r['tokens_per_second']:>9.0f} tokens/s  {r['ratio']:.2f}x  "
              f"efficiency {r['efficiency']:.2f}  round {r['round_seconds']:.1f} s  max rel diff {r['max_rel_diff']:.1e}")
    print(f"  [{'PASS' if same else 'MISS'}] the same adapter (< 1e-5, one thread per process) on every split")
    return same


if __name__ == "__main__":
    sys.exit(main())
