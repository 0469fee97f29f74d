#!/usr/bin/env python3
"""Benchmark TGSP build/verify/unpack against same-run baselines.

Prints, for a large payload (default 1 GiB):
  - `tgflow tgsp verify` of it through the CLI, as a ratio to single-thread
    `openssl dgst -sha256` over the same bytes: large entries carry sharded
    digests (format.md section 3.1) that verify hashes on every core;
  - build (encrypt to one recipient + hybrid sign) against OpenSSL's own pipeline
    over the same bytes: `openssl dgst -sha256` plus AES-256-GCM (OpenSSL through
    cryptography) encrypting them into a file that is fsynced, as the package is;
  - verify, build and unpack in-process, with `sha256sum`, a bare AES-GCM loop and
    a write+fsync of the same size for reference, and peak RSS at 64 MiB and at the
    large size (flat = streaming);
  - how verify scales with hashing threads (1, 2, ... the usable cores);
  - the time to reject an *unsigned* package of the large size (signatures are
    checked before any payload is hashed), against verifying the signed one;
  - `tgflow tgsp verify` of a small package and `tgflow --version`, beside the
    interpreter's floor (`python -c "import cryptography"`), with the biggest
    imports of the verify command (`python -X importtime`), and whether torch,
    typer or rich were imported. Bytecode is compiled first (into a scratch
    PYTHONPYCACHEPREFIX), as a wheel install does.

Targets (issue #31): CLI verify of 1 GiB <= 0.6x openssl; build <= 1.2x OpenSSL's
pipeline; small verify <= 0.15 s and <= 4x the floor; --version <= 0.08 s; peak RSS
flat; an unsigned package rejected in < 50 ms and < 2% of the signed verify.
Exit 1 if any is missed.

    python scripts/bench_tgsp.py [--size-mib 1024] [--dir /tmp] [--repeat 3] [--json]
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
sys.path.insert(0, str(Path(__file__).resolve().parent))
import benchkit  # noqa: E402

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


def pipeline(path: Path, folder: Path) -> float:
    """OpenSSL's own pipeline over the same bytes: `openssl dgst -sha256`, then AES-256-GCM
    (OpenSSL, through cryptography) in 1 MiB chunks into a file, fsynced as a package is."""
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    t0 = time.perf_counter()
    subprocess.run(["openssl", "dgst", "-sha256", str(path)], check=True, stdout=subprocess.DEVNULL)
    aead, buf, out = AESGCM(os.urandom(32)), bytearray(1 << 20), bytearray((1 << 20) + 16)
    dst = folder / "pipeline.out"
    fd = os.open(dst, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    with open(path, "rb", buffering=0) as f:
        i = 0
        while n := f.readinto(buf):
            aead.encrypt_into(i.to_bytes(12, "big"), memoryview(buf)[:n], None, memoryview(out)[:n + 16])
            os.write(fd, memoryview(out)[:n + 16])
            i += 1
    os.fsync(fd)
    os.close(fd)
    elapsed = time.perf_counter() - t0
    dst.unlink()
    return elapsed


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


def cli_env(work: Path) -> tuple[list[str], dict]:
    """The installed `tgflow`, with bytecode compiled once into a scratch cache (as a wheel has it)."""
    exe = shutil.which("tgflow", path=str(Path(sys.executable).parent)) or shutil.which("tgflow")
    cmd = [exe] if exe else [sys.executable, "-m", "tgflow_cli"]
    env = dict(os.environ, TGFLOW_HOME=str(work / "home"), PYTHONPYCACHEPREFIX=str(work / "pycache"))
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(ROOT / "tgsp"), str(ROOT / "tgflow_cli"),
                    str(ROOT / "runners")], env=env, check=True, stdout=subprocess.DEVNULL)
    return cmd, env


def timed_env(cmd: list[str], env: dict) -> float:
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, env=env, stdout=subprocess.DEVNULL)
    return time.perf_counter() - t0


def scaling(work: Path, cores: int, repeat: int) -> dict:
    """In-process verify of the large package with 1, 2, ... hashing threads."""
    counts = sorted({1, 2, cores} | ({4, 8} if cores >= 8 else set()))
    out = {}
    for n in counts:
        os.environ["TGFLOW_HASH_THREADS"] = str(n)
        try:
            out[n] = min(run_worker("verify", work)["seconds"] for _ in range(repeat))
        finally:
            del os.environ["TGFLOW_HASH_THREADS"]
    return out


def bench_size(base: Path, mib: int, repeat: int, cli: bool = False) -> dict:
    work = base / f"w{mib}"
    blob = make_payload(work, mib)
    setup_keys(work)
    res = {"mib": mib}
    for name, fn in [("openssl", lambda: timed(["openssl", "dgst", "-sha256", str(blob)])),
                     ("sha256sum", lambda: timed(["sha256sum", str(blob)])),
                     ("aead_loop", lambda: aead_loop(blob)),
                     ("pipeline", lambda: pipeline(blob, work)),
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
    if cli:
        cmd, env = cli_env(work)
        verify = cmd + ["tgsp", "verify", str(work / "pkg.tgsp"), "--json"]
        timed_env(verify, env)
        res["cli_verify"] = min(timed_env(verify, env) for _ in range(repeat))
        res["scaling"] = scaling(work, len(os.sched_getaffinity(0)), repeat)
    shutil.rmtree(work)
    return res


def small_verify(base: Path, repeat: int) -> dict:
    work = base / "small"
    make_payload(work, 1)
    setup_keys(work)
    run_worker("build", work)
    cmd, env = cli_env(work)
    verify = cmd + ["tgsp", "verify", str(work / "pkg.tgsp"), "--json"]
    floor = [sys.executable, "-c", "import cryptography"]
    for c in (verify, floor, cmd + ["--version"]):
        timed_env(c, env)  # warm
    runs = {"verify": [], "floor": [], "version": []}
    for _ in range(max(repeat, 5) * 2):  # interleaved, so load changes hit all three alike
        runs["verify"].append(timed_env(verify, env))
        runs["floor"].append(timed_env(floor, env))
        runs["version"].append(timed_env(cmd + ["--version"], env))
    probe = ("import sys; sys.argv = ['tgflow', 'tgsp', 'verify', %r, '--json']\n"
             "from tgflow_cli.start import entry\ntry:\n    entry()\nexcept SystemExit:\n    pass\n"
             "sys.stderr.write('LOADED ' + ' '.join(sorted({m.split('.')[0] for m in sys.modules})) + '\\n')"
             % str(work / "pkg.tgsp"))
    res = subprocess.run([sys.executable, "-X", "importtime", "-c", probe], env=env, capture_output=True, text=True)
    loaded = set(res.stderr.rsplit("LOADED ", 1)[1].split())
    return {**{k: statistics.median(v) for k, v in runs.items()},
            "loaded_heavy": sorted(loaded & {"torch", "typer", "rich", "pydantic", "transformers", "peft", "tenseal"}),
            "top_imports": top_imports(res.stderr)}


def top_imports(importtime: str, n: int = 8) -> list[tuple[str, float]]:
    """The top-level imports of a `python -X importtime` log, by cumulative time (ms)."""
    rows = []
    for line in importtime.splitlines():
        if line.startswith("import time:") and "|" in line:
            _, cum, name = line.split("|")
            if cum.strip().isdigit() and not name.startswith("   "):  # first level under the script
                rows.append((name.strip(), int(cum) / 1000))
    return sorted(rows, key=lambda r: -r[1])[:n]


def checks_of(small: dict, large: dict, sv: dict) -> list[dict]:
    ratio = lambda r, op: r[op] / r["openssl"]  # noqa: E731
    rss = ("build_rss", "verify_rss", "unpack_rss")
    return [
        benchkit.row("CLI verify, 1 large package", large["cli_verify"], "s", ratio(large, "cli_verify"),
                     "<= 0.6x openssl dgst", ratio(large, "cli_verify") <= 0.6),
        benchkit.row("build + encrypt + sign", large["build"], "s", large["build"] / large["pipeline"],
                     "<= 1.2x OpenSSL pipeline", large["build"] / large["pipeline"] <= 1.2),
        benchkit.row("CLI verify, small package (median)", sv["verify"], "s", sv["verify"] / sv["floor"],
                     "<= 0.15 s and <= 4x floor", sv["verify"] <= 0.15 and sv["verify"] <= 4 * sv["floor"]),
        benchkit.row("tgflow --version (median)", sv["version"], "s", sv["version"] / sv["floor"], "<= 0.08 s",
                     sv["version"] <= 0.08),
        benchkit.row("peak RSS flat (large - small)", max(large[k] - small[k] for k in rss), "MiB", None, "< 16 MiB",
                     all(large[k] - small[k] < 16 for k in rss)),
        benchkit.row("unsigned large package rejected", large["reject"], "s", large["reject"] / large["verify"],
                     "< 50 ms and < 2% of verify", large["reject"] < 0.05 and large["reject"] < 0.02 * large["verify"]),
        benchkit.row("verify loads no torch, typer, rich, pydantic", len(sv["loaded_heavy"]), "modules", None, "0",
                     not sv["loaded_heavy"]),
    ]


def print_text(small: dict, large: dict, sv: dict, rows: list[dict], repeat: int) -> None:
    ratio = lambda r, op: r[op] / r["openssl"]  # noqa: E731
    for r in (large, small):
        mb = r["mib"]
        print(f"\n== {mb} MiB payload (best of {repeat}) ==")
        print(f"  baseline openssl dgst -sha256 {r['openssl']:.3f} s  ({mb / r['openssl']:.0f} MiB/s)")
        print(f"  baseline OpenSSL pipeline     {r['pipeline']:.3f} s  (dgst + AES-256-GCM into a file + fsync)")
        print(f"  baseline sha256sum            {r['sha256sum']:.3f} s  ({r['sha256sum'] / r['openssl']:.2f}x openssl)")
        print(f"  baseline AES-256-GCM loop     {r['aead_loop']:.3f} s  ({r['aead_loop'] / r['openssl']:.2f}x openssl)")
        print(f"  baseline write+fsync same MiB {r['write_floor']:.3f} s  ({r['write_floor'] / r['openssl']:.2f}x openssl)")
        if "cli_verify" in r:
            print(f"  tgflow tgsp verify (CLI) {r['cli_verify']:.3f} s = {ratio(r, 'cli_verify'):.2f}x openssl")
        print(f"  tgsp build  {r['build']:.3f} s = {r['build'] / r['pipeline']:.2f}x OpenSSL pipeline   "
              f"peak RSS {r['build_rss']:.0f} MiB")
        for op in ("verify", "unpack"):
            print(f"  tgsp {op:<6} {r[op]:.3f} s = {ratio(r, op):.2f}x openssl   peak RSS {r[op + '_rss']:.0f} MiB")
        print(f"  tgsp reject unsigned (worst of {repeat}) {r['reject'] * 1000:.1f} ms = "
              f"{r['reject'] / r['verify'] * 100:.2f}% of the signed verify   peak RSS {r['reject_rss']:.0f} MiB")
        if "scaling" in r:
            one = r["scaling"][1]
            print("  verify by hashing threads: " + ", ".join(f"{n}: {t:.3f} s ({one / t:.2f}x)"
                                                          for n, t in r["scaling"].items()))
    print(f"\nsmall package, median: tgflow tgsp verify {sv['verify'] * 1000:.0f} ms = {sv['verify'] / sv['floor']:.1f}x "
          f"the floor (python -c 'import cryptography': {sv['floor'] * 1000:.0f} ms); tgflow --version "
          f"{sv['version'] * 1000:.0f} ms; loaded: {', '.join(sv['loaded_heavy']) or 'no torch, typer, rich or pydantic'}")
    print("  biggest imports of the verify command (python -X importtime, cumulative): "
          + ", ".join(f"{name} {ms:.0f} ms" for name, ms in sv["top_imports"]))
    for r in rows:
        print(f"  [{'PASS' if r['ok'] else 'MISS'}] {r['what']}: target {r['target']}")


def main() -> int:
    ap = argparse.ArgumentParser(description="TGSP benchmark (see module docstring)")
    ap.add_argument("--size-mib", type=int, default=1024)
    ap.add_argument("--small-mib", type=int, default=64)
    ap.add_argument("--dir", default=None, help="scratch folder (needs ~3x size free)")
    ap.add_argument("--repeat", type=int, default=5)
    benchkit.add_json_flag(ap)
    ap.add_argument("--worker", nargs=2, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        worker(args.worker[0], Path(args.worker[1]))
        return 0
    with benchkit.run("tgsp", "openssl dgst -sha256 (one core) and OpenSSL's hash + AES-GCM pipeline over the same "
                      "bytes; python -c 'import cryptography'", args.json) as result:
        base = Path(tempfile.mkdtemp(prefix="tgsp-bench-", dir=args.dir))
        try:
            small = bench_size(base, args.small_mib, args.repeat)
            large = bench_size(base, args.size_mib, args.repeat, cli=True)
            sv = small_verify(base, args.repeat)
        finally:
            shutil.rmtree(base, ignore_errors=True)
        rows = checks_of(small, large, sv)
        result.update(rows=rows, small=small, large=large, small_verify=sv)
        print_text(small, large, sv, rows, args.repeat)
    return benchkit.verdict(rows)


if __name__ == "__main__":
    sys.exit(main())
