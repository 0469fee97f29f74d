#!/usr/bin/env python3
"""Benchmark the route state's encryption at rest: what sealing a checkpoint costs.

A checkpoint of an adapter with --params parameters (weights and both AdamW moments,
float32, plus RNG state) is written and read back through runners/state/checkpoint.py
(sealed: STREAM AES-256-GCM under a data key wrapped with ML-KEM-768 + X25519, a signed
pointer, fsync and rename). The baseline, in the same run and like for like: the same
tensors as one safetensors blob written with the same atomic write (temp, fsync, rename)
and read back, which is what a plaintext checkpoint costs. Printed: median seconds of
--runs writes and reads each, and the ratios (targets: write <= 2x, which
recurs every checkpoint_every steps and also hashes the file for its signed pointer; read <= 3x, once per resume, which also hashes the
file against its signed pointer and decrypts it into fresh memory).

    python scripts/bench_state.py [--json] [--params 8000000] [--runs 5]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
sys.path.insert(0, str(ROOT))
import benchkit  # noqa: E402


def tensors(n: int) -> dict:
    import torch

    g = torch.Generator().manual_seed(0)
    half = n // 2
    params = {"a": torch.randn(half, generator=g), "b": torch.randn(n - half, generator=g)}
    optim = {f"{k}.{m}": torch.randn_like(v) for k, v in params.items() for m in ("exp_avg", "exp_avg_sq")}
    return {"params": params, "optim": optim, "rng": {"cpu": torch.get_rng_state()}}


def timed(fn, runs: int) -> float:
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main() -> int:
    from safetensors.torch import load, save

    from runners.state.checkpoint import Checkpoint, CheckpointStore
    from runners.state.keys import ephemeral
    from tgsp.atomic import write_bytes

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    benchkit.add_json_flag(ap)
    ap.add_argument("--params", type=int, default=8_000_000)
    ap.add_argument("--runs", type=int, default=5)
    args = ap.parse_args()
    with benchkit.run("state", "the same tensors as a plaintext safetensors file, same atomic write, same run",
                      args.json) as res, tempfile.TemporaryDirectory() as tmp:
        parts = tensors(args.params)
        flat = {f"{p}/{k}": v for p, d in parts.items() for k, v in d.items()}
        plain_path = Path(tmp) / "plain.safetensors"
        store = CheckpointStore(Path(tmp) / "sealed", ephemeral("bench"))
        store.load({"round": "bench"})
        ckpt = Checkpoint(1, {}, parts["params"], parts["optim"], parts["rng"])
        w_plain = timed(lambda: write_bytes(plain_path, save(flat), mode=0o600), args.runs)
        r_plain = timed(lambda: load(plain_path.read_bytes()), args.runs)
        w_sealed = timed(lambda: store.save(ckpt), args.runs)

        def read_sealed():
            assert CheckpointStore(store.folder, store.keys).load({"round": "bench"}).step == 1
        r_sealed = timed(read_sealed, args.runs)
        mb = plain_path.stat().st_size / 2**20
        res.update(megabytes=mb, seconds={"write_plain": w_plain, "write_sealed": w_sealed, "read_plain": r_plain,
                                          "read_sealed": r_sealed})
        res["rows"] = [benchkit.row("sealed checkpoint write", round(w_sealed, 3), "s", round(w_sealed / w_plain, 2),
                                    "<= 2x", w_sealed / w_plain <= 2.0),
                       benchkit.row("sealed checkpoint read (resume)", round(r_sealed, 3), "s",
                                    round(r_sealed / r_plain, 2), "<= 3x", r_sealed / r_plain <= 3.0)]
        print(f"checkpoint of {args.params:,} parameters with both AdamW moments: {mb:.0f} MiB")
        print(f"write: sealed {w_sealed:.3f} s, plaintext {w_plain:.3f} s ({w_sealed / w_plain:.2f}x)")
        print(f"read:  sealed {r_sealed:.3f} s, plaintext {r_plain:.3f} s ({r_sealed / r_plain:.2f}x)")
    return benchkit.verdict(res["rows"])


if __name__ == "__main__":
    sys.exit(main())
