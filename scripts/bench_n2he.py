#!/usr/bin/env python3
"""Benchmark the CKKS core of n2he secure aggregation (issue 13; not wired into a round yet).

8 parties x a 2M-parameter update on this machine: each party encrypts its vector chunk by chunk
into its own file; the aggregator adds chunk k of every party without any secret key; the key
holder decrypts the sum. Printed: bytes per parameter on the wire (target <= 32; NVFlare's
depth-1 setting measured 57.6), encrypt time per party per 1M parameters (target <= 1.6 s), the
aggregation of all 8 (target <= 1 s) against the same sum in plaintext numpy in this run, the
decrypt time, the largest error against plaintext, and peak memory at 0.5M, 1M and 2M
parameters (each in its own process; it must be flat).

    python scripts/bench_n2he.py [--parties 8] [--params 2000000]
"""

from __future__ import annotations

import argparse
import json
import os
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))



def _hwm_mb() -> float:
    """This process's peak RSS (VmHWM). Not ru_maxrss: Linux carries that over from the parent
    across fork and exec, so a child started by a big parent would report the parent's size."""
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmHWM:")) / 1024


def _write_chunks(path: Path, chunks) -> int:
    size = 0
    with open(path, "wb") as f:
        for c in chunks:
            f.write(struct.pack("<I", len(c)) + c)
            size += len(c)
    return size


def _read_chunks(path: Path):
    with open(path, "rb") as f:
        while head := f.read(4):
            yield f.read(struct.unpack("<I", head)[0])


def run(parties: int, n: int, tmp: Path) -> dict:
    import numpy as np

    from runners.n2he import ckks

    secret = ckks.new_secret_context()
    (tmp / "public.ctx").write_bytes(ckks.public_bytes(secret))
    public = ckks.load_public((tmp / "public.ctx").read_bytes())
    rng = np.random.default_rng(0)
    wire, t_enc = 0, 0.0
    for p in range(parties):
        x = rng.standard_normal(n).astype(np.float32) * 1e-2  # regenerated below for the check
        t0 = time.perf_counter()
        wire += _write_chunks(tmp / f"p{p}.ct", ckks.encrypt(public, x))
        t_enc += time.perf_counter() - t0
    t0 = time.perf_counter()
    readers = [_read_chunks(tmp / f"p{p}.ct") for p in range(parties)]
    _write_chunks(tmp / "sum.ct", (ckks.add(public, (next(r) for r in readers)) for _ in range(ckks.chunks_for(n))))
    t_agg = time.perf_counter() - t0
    t0 = time.perf_counter()
    got = ckks.decrypt(secret, _read_chunks(tmp / "sum.ct"), n)
    t_dec = time.perf_counter() - t0
    rng = np.random.default_rng(0)
    xs = [rng.standard_normal(n).astype(np.float32) * 1e-2 for _ in range(parties)]
    t0 = time.perf_counter()
    want = np.sum(np.stack(xs), axis=0, dtype=np.float64)
    t_plain = time.perf_counter() - t0
    return {"bytes_per_param": wire / (parties * n), "encrypt_s_per_party_per_1M": t_enc / parties / (n / 1e6),
            "aggregate_s": t_agg, "plain_sum_s": t_plain, "decrypt_s": t_dec,
            "max_abs_err": float(np.abs(got - want).max()),
            "max_rel_err": float(np.abs(got - want).max() / np.abs(want).max())}


def child(parties: int, n: int) -> dict:
    with tempfile.TemporaryDirectory(prefix="bench-n2he-") as t:
        out = run(parties, n, Path(t))
        out["aggregator_peak_rss_mb"] = aggregator_peak(parties, n, Path(t))
    return out


def aggregator_peak(parties: int, n: int, tmp: Path) -> float:
    """The aggregator's peak memory, alone in a process: public context, one chunk per party."""
    proc = subprocess.run([sys.executable, __file__, "--aggregate-only", str(tmp), str(parties), str(n)], check=True,
                          capture_output=True, text=True)
    return float(proc.stdout.strip().splitlines()[-1])


def aggregate_only(tmp: Path, parties: int, n: int) -> None:
    from runners.n2he import ckks

    public = ckks.load_public((tmp / "public.ctx").read_bytes())
    readers = [_read_chunks(tmp / f"p{p}.ct") for p in range(parties)]
    _write_chunks(tmp / "sum2.ct", (ckks.add(public, (next(r) for r in readers)) for _ in range(ckks.chunks_for(n))))
    print(_hwm_mb())


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--parties", type=int, default=8)
    ap.add_argument("--params", type=int, default=2_000_000)
    ap.add_argument("--child", nargs=2, type=int)
    ap.add_argument("--aggregate-only", nargs=3)
    args = ap.parse_args()
    if args.aggregate_only:
        tmp, parties, n = args.aggregate_only
        return aggregate_only(Path(tmp), int(parties), int(n))
    if args.child:
        print(json.dumps(child(*args.child)))
        return
    results = {}
    for n in (args.params // 4, args.params // 2, args.params):
        proc = subprocess.run([sys.executable, __file__, "--child", str(args.parties), str(n)], check=True,
                              capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "2"})
        results[n] = json.loads(proc.stdout.strip().splitlines()[-1])
    r = results[args.params]
    print(f"{args.parties} parties x {args.params / 1e6:.1f}M parameters, CKKS N=8192, primes [60, 40], scale 2^40:")
    print(f"  bytes per parameter on the wire: {r['bytes_per_param']:.1f} (target <= 32; float32 is 4)")
    print(f"  encrypt, per party per 1M parameters: {r['encrypt_s_per_party_per_1M']:.2f} s (target <= 1.6 s)")
    print(f"  aggregate all {args.parties}: {r['aggregate_s']:.2f} s (target <= 1 s); the same sum in plaintext numpy: "
          f"{r['plain_sum_s']:.3f} s ({r['aggregate_s'] / r['plain_sum_s']:.0f}x)")
    print(f"  decrypt the sum: {r['decrypt_s']:.2f} s; largest error against plaintext: {r['max_abs_err']:.2e} "
          f"({r['max_rel_err']:.1e} of the largest value)")
    print("  aggregator peak RSS: " + ", ".join(f"{n / 1e6:.1f}M params {v['aggregator_peak_rss_mb']:.0f} MB"
                                              for n, v in results.items()) + " (it holds one chunk per party)")


if __name__ == "__main__":
    main()
