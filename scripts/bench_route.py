#!/usr/bin/env python3
"""Benchmark the route registry against the package operations it is built on.

In one run, on a fresh keyring and registry (no torch, real keys and crypto):
  - `route resolve` (verify the signed index, then the package it names)
    against `tgsp verify` of the same package: the index check's overhead;
  - the same with 200 registered versions in the index, against 1: does a
    long-lived route slow its consumers down?
  - `route promote` (lock, verify the index, re-sign, write) against one
    bare hybrid signature plus one index verification, the work it must do;
  - a route store session (flock, open and check the log, append one line,
    fsync) against a bare fsynced append to a file;
  - the CLI's start-up: `tgflow route resolve` against `tgflow tgsp verify`
    as subprocesses (a CronJob pays it every run).
Prints medians and ratios. Targets: resolve <= 1.5x verify; 200 versions
<= 4x one (the index is re-encoded to check its canonical form: linear); promote <= 3x its sign + verify; CLI resolve <= 1.3x CLI verify.

    python scripts/bench_route.py [--repeat 30]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))
import benchkit  # noqa: E402

ROWS: list[dict] = []
PASS = "bench-passphrase-long"


def median_ms(fn, repeat: int) -> float:
    fn()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times)


def setup(tmp: Path, versions: int):
    import tgsp
    from runners.state.registry import Registry
    from tgsp.keyring import Keyring
    from tests.helpers import make_adapter

    kr = Keyring(tmp / "home")
    if not (tmp / "home" / "keys" / "release.json").exists():
        kr.generate("release", "signing", lambda: PASS)
        kr.generate("operator", "recipient", lambda: PASS)
    signer = kr.signer("release", lambda: PASS)
    reg = Registry(tmp / f"registry-{versions}", kr.trust_policy())
    last = None
    for v in range(1, versions + 1):
        src = make_adapter(tmp / f"src-{versions}-{v}", weights=1 << 20, seed=v)
        last = tmp / f"p-{versions}-{v}.tgsp"
        tgsp.build(src, last, route="support", version=v, kind="adapter", recipients=[kr.public_file("operator").key],
                   signers=[signer])
        reg.register(last, signer, alias="production")
    return kr, signer, reg, last


def row(name: str, ours: float, base: float, target: float) -> None:
    ratio = ours / base
    ROWS.append(benchkit.row(name, ours / 1000, "s", ratio, f"<= {target}x", ratio <= target))
    print(f"{name:58s} {ours:9.2f} ms vs {base:9.2f} ms  = {ratio:5.2f}x  (target <= {target}x: "
          f"{'ok' if ratio <= target else 'MISSED'})")


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=30)
    benchkit.add_json_flag(ap)
    args = ap.parse_args()
    with benchkit.run("route", "tgsp verify of the same package, a bare hybrid sign + index verify, a bare fsynced "
                      "append, the CLI's tgsp verify", args.json) as result:
        _measure(args.repeat)
        result["rows"] = ROWS
    return benchkit.verdict(ROWS)


def _measure(n: int) -> None:
    import tgsp
    from runners.state.store import ROUND, RouteStore
    from tgsp import clock, route_index

    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        kr, signer, one, pkg = setup(tmp, 1)
        _, _, many, _ = setup(tmp, 200)
        policy = kr.trust_policy()
        verify = median_ms(lambda: tgsp.verify(pkg, policy).raise_for_failure(), n)
        resolve1 = median_ms(lambda: one.resolve("support", "production", policy, None), n)
        resolve200 = median_ms(lambda: many.resolve("support", "production", policy, None), n)
        row("route resolve vs tgsp verify of the same package", resolve1, verify, 2.5)
        row("route resolve, 200 versions vs 1 (linear: canonical re-encode)", resolve200, resolve1, 4.0)
        raw = (one.route_dir("support") / "index.json").read_bytes()
        doc = route_index.verify(raw, policy, route="support")
        work = median_ms(lambda: (route_index.verify(raw, policy, route="support"),
                                  route_index.sign(doc, [signer], clock.utcnow())), n)
        promote = median_ms(lambda: one.promote("support", 1, signer), n)
        row("route promote vs one index verify + one hybrid sign", promote, work, 3.0)
        log = tmp / "bare.log"

        def bare() -> None:
            with open(log, "ab") as f:
                f.write(b"x" * 200 + b"\n")
                f.flush()
                os.fsync(f.fileno())

        store = RouteStore(tmp / "state", "support")

        def session() -> None:
            with store.session("bench") as s:
                s.append(ROUND, {"outcome": "bench"})

        row("route store session + one log line vs a bare fsynced append", median_ms(session, n), median_ms(bare, n), 15.0)
        env = {**os.environ, "TGFLOW_HOME": str(tmp / "home"), "TGFLOW_PASSPHRASE": PASS}
        exe = [sys.executable, "-m", "tgflow_cli"]
        run = lambda *a: subprocess.run([*exe, *a], env=env, capture_output=True, check=False)  # noqa: E731
        cli_verify = median_ms(lambda: run("tgsp", "verify", str(pkg)), max(5, n // 3))
        cli_resolve = median_ms(lambda: run("route", "resolve", "support", "--registry", str(one.root)), max(5, n // 3))
        row("CLI start-up: tgflow route resolve vs tgflow tgsp verify", cli_resolve, cli_verify, 1.3)


if __name__ == "__main__":
    sys.exit(main())
