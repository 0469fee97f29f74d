#!/usr/bin/env python3
"""Benchmark TGSP build/verify/unpack against same-run baselines.

Prints, for a large payload (default 1 GiB):
  - build (encrypt to one recipient + hybrid sign), verify and unpack wall
    time as ratios to `openssl dgst -sha256` over the same bytes (the
    single-core SHA-256 limit of this machine), plus `sha256sum` and a plain
    AES-256-GCM loop for reference;
  - peak RSS of each operation at 64 MiB and at the large size (flat = streaming);
  - the time to reject an *unsigned* package of the large size (signatures
    are checked before any payload is hashed), against verifying the signed one;
  - `tgflow tgsp verify` wall time on a small package, and whether torch got imported.

Targets (issue #2): verify <= 1.2x, build with encryption <= 2.0x,
peak RSS flat and < 100 MiB, small verify < 0.25 s (issue #16); (issue #10) an unsigned
package of any size is rejected in < 50 ms and < 2% of the signed verify.
Exit 1 if any is missed.

    python scripts/bench_tgsp.py [--size-mib 1024] [--dir /tmp] [--repeat 3]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PASS = "bench-passphrase"


def worker(op: str, work: Path) -> None:
    """Runs in a fresh process: one operation, then report time and peak RSS."""
    sys.path.insert(0, str(ROOT))
    import tgsp
    from tgsp import Keyring

    kr = Keyring(work / "home")
    # Key unlock (Argon2id, ~0.15 s, 64 MiB) is a fixed per-command cost: it
    # counts in peak RSS but not in the payload timings.
    signer = kr.signer("rel", lambda: PASS) if op == "build" else None
    ids = kr.identities("ops", lambda: PASS) if op == "unpack" else None
    t0 = time.perf_counter()
    if op == "build":
        tgsp.build(work / "src", work / "pkg.tgsp", recipients=[kr.public_file("ops").key], signers=[signer])
    elif op == "build-unsigned":
        tgsp.build(work / "src", work / "unsigned.tgsp")
    elif op == "verify":
        assert tgsp.verify(work / "pkg.tgsp", kr.trust_policy()).ok
    elif op == "reject":
        report = tgsp.verify(work / "unsigned.tgsp", kr.trust_policy())
        assert not report.ok and report.first_failure.name == "signatures"
    elif op == "unpack":
        tgsp.unpack(work / "pkg.tgsp", work / "out", kr.trust_policy(), identities=ids)
    elapsed = time.perf_counter() - t0
    # VmHWM is this process's own peak; ru_maxrss would carry the parent's over exec.
    hwm = next(line for line in open("/proc/self/status") if line.startswith("VmHWM:"))
    rss_mib = int(hwm.split()[1]) / 1024
    print(json.dumps({"seconds": elapsed, "rss_mib": rss_mib}))


def run_worker(op: str, work: Path) -> dict:
    if op == "unpack":
        shutil.rmtree(work / "out", ignore_errors=True)
    out = subprocess.run([sys.executable, __file__, "--worker", op, str(work)], check=True,
                         capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def timed(cmd: list[str]) -> float:
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - t0


def aead_loop(path: Path) -> float:
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    aead, buf, out = AESGCM(os.urandom(32)), bytearray(1 << 20), bytearray((1 << 20) + 16)
    t0 = time.perf_counter()
    with open(path, "rb", buffering=0) as f:
        i = 0
        while n := f.readinto(buf):
            aead.encrypt_into(i.to_bytes(12, "big"), memoryview(buf)[:n], None, memoryview(out)[:n + 16])
            i += 1
    return time.perf_counter() - t0


def write_floor(folder: Path, mib: int) -> float:
    """Same-run I/O floor: write and fsync this many bytes into the scratch folder."""
    block = os.urandom(1 << 20)
    path = folder / "floor.bin"
    t0 = time.perf_counter()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    for _ in range(mib):
        os.write(fd, block)
    os.fsync(fd)
    os.close(fd)
    elapsed = time.perf_counter() - t0
    path.unlink()
    return elapsed


def make_payload(work: Path, mib: int) -> Path:
    src = work / "src"
    src.mkdir(parents=True, exist_ok=True)
    (src / "adapter_config.json").write_text('{"peft_type": "LORA", "r": 16}\n')
    blob = src / "adapter_model.safetensors"
    with open(blob, "wb") as f:
        for _ in range(mib):
            f.write(os.urandom(1 << 20))
    return blob


def setup_keys(work: Path) -> None:
    sys.path.insert(0, str(ROOT))
    from tgsp import Keyring

    kr = Keyring(work / "home")
    kr.generate("rel", "signing", lambda: PASS)
    kr.generate("ops", "recipient", lambda: PASS)


def bench_size(base: Path, mib: int, repeat: int) -> dict:
    work = base / f"w{mib}"
    blob = make_payload(work, mib)
    setup_keys(work)
    res = {"mib": mib}
    for name, fn in [("openssl", lambda: timed(["openssl", "dgst", "-sha256", str(blob)])),
                     ("sha256sum", lambda: timed(["sha256sum", str(blob)])),
                     ("aead_loop", lambda: aead_loop(blob)),
                     ("write_floor", lambda: write_floor(work, mib))]:
        fn()  # warm the page cache
        res[name] = min(fn() for _ in range(repeat))
    for op in ("build", "verify", "unpack"):
        runs = [run_worker(op, work) for _ in range(repeat)]
        res[op] = min(r["seconds"] for r in runs)
        res[op + "_rss"] = max(r["rss_mib"] for r in runs)
    run_worker("build-unsigned", work)
    runs = [run_worker("reject", work) for _ in range(repeat)]
    res["reject"], res["reject_rss"] = max(r["seconds"] for r in runs), max(r["rss_mib"] for r in runs)
    shutil.rmtree(work)
    return res


def small_verify(base: Path, repeat: int) -> dict:
    work = base / "small"
    make_payload(work, 1)
    setup_keys(work)
    run_worker("build", work)
    exe = shutil.which("tgflow", path=str(Path(sys.executable).parent)) or shutil.which("tgflow")
    cmd = ([exe] if exe else [sys.executable, "-m", "tgflow_cli"]) + ["tgsp", "verify", str(work / "pkg.tgsp"), "--json"]
    env = dict(os.environ, TGFLOW_HOME=str(work / "home"))
    times = []
    for _ in range(repeat + 1):
        t0 = time.perf_counter()
        subprocess.run(cmd, check=True, env=env, stdout=subprocess.DEVNULL)
        times.append(time.perf_counter() - t0)
    probe = ("import sys; from tgflow_cli.main import main; main(['tgsp','verify',%r]); "
             "print('torch' in sys.modules)" % str(work / "pkg.tgsp"))
    torch = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True).stdout.strip().splitlines()[-1]
    return {"median": statistics.median(times[1:]), "torch_imported": torch == "True"}


def main() -> int:
    ap = argparse.ArgumentParser(description="TGSP benchmark (see module docstring)")
    ap.add_argument("--size-mib", type=int, default=1024)
    ap.add_argument("--small-mib", type=int, default=64)
    ap.add_argument("--dir", default=None, help="scratch folder (needs ~3x size free)")
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--worker", nargs=2, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        worker(args.worker[0], Path(args.worker[1]))
        return 0
    base = Path(tempfile.mkdtemp(prefix="tgsp-bench-", dir=args.dir))
    try:
        small, large = bench_size(base, args.small_mib, args.repeat), bench_size(base, args.size_mib, args.repeat)
        sv = small_verify(base, args.repeat)
    finally:
        shutil.rmtree(base, ignore_errors=True)
    ratio = lambda r, op: r[op] / r["openssl"]  # noqa: E731
    checks = {
        "verify <= 1.2x openssl sha256": ratio(large, "verify") <= 1.2,
        "build+encrypt+sign <= 2.0x openssl sha256": ratio(large, "build") <= 2.0,
        "peak RSS < 100 MiB": max(large[k] for k in ("build_rss", "verify_rss", "unpack_rss")) < 100,
        "peak RSS flat (large - small < 16 MiB)": all(large[k] - small[k] < 16 for k in ("build_rss", "verify_rss", "unpack_rss")),
        "small verify < 0.25 s (median)": sv["median"] < 0.25,
        "unsigned large package rejected < 50 ms": large["reject"] < 0.05,
        "unsigned reject < 2% of signed verify": large["reject"] < 0.02 * large["verify"],
        "verify imports no torch": not sv["torch_imported"],
    }
    result = {"small": small, "large": large, "small_verify": sv, "checks": checks}
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        for r in (large, small):
            mb = r["mib"]
            print(f"\n== {mb} MiB payload (best of {args.repeat}) ==")
            print(f"  baseline openssl dgst -sha256 {r['openssl']:.3f} s  ({mb / r['openssl']:.0f} MiB/s)")
            print(f"  baseline sha256sum            {r['sha256sum']:.3f} s  ({r['sha256sum'] / r['openssl']:.2f}x openssl)")
            print(f"  baseline AES-256-GCM loop     {r['aead_loop']:.3f} s  ({r['aead_loop'] / r['openssl']:.2f}x openssl)")
            print(f"  baseline write+fsync same MiB {r['write_floor']:.3f} s  ({r['write_floor'] / r['openssl']:.2f}x openssl): this disk's I/O floor")
            for op in ("build", "verify", "unpack"):
                extra = "" if op == "verify" else f"  ({r[op] / (r['openssl'] + r['write_floor']):.2f}x openssl+write floor)"
                print(f"  tgsp {op:<6} {r[op]:.3f} s = {ratio(r, op):.2f}x openssl{extra}   peak RSS {r[op + '_rss']:.0f} MiB")
            print(f"  tgsp reject unsigned (worst of {args.repeat}) {r['reject'] * 1000:.1f} ms = "
                  f"{r['reject'] / r['verify'] * 100:.2f}% of the signed verify   peak RSS {r['reject_rss']:.0f} MiB")
        print(f"\nsmall package: tgflow tgsp verify median {sv['median'] * 1000:.0f} ms; torch imported: {sv['torch_imported']}")
        for name, ok in checks.items():
            print(f"  [{'PASS' if ok else 'MISS'}] {name}")
    return 0 if all(checks.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
