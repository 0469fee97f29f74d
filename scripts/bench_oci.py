#!/usr/bin/env python3
"""Benchmark OCI transfers: tgflow push / pull / route materialize against the tools a user
would otherwise run, in the same run, on the same package and the same local registry.

A package of --mib MiB (encrypted, signed) is pushed to and pulled from Debian's
docker-registry started here on a free port (plain HTTP on loopback: the transfer code is
measured, not a network). Each timed command is a whole CLI process, the median of --runs:

- push: `tgflow push PKG oci://…` against `skopeo copy oci:LAYOUT docker://…` of the same
  artifact (same bytes; a new repository each run, so every blob is uploaded);
- pull: `tgflow pull … -o FILE`, which also verifies the package, against `skopeo copy
  docker://… oci:DIR` followed by `tgflow tgsp verify` on the blob (what a user would run);
- materialize: `tgflow route materialize` (resolve, verify, decrypt in memory, write the
  PEFT folder, switch the link) against `tgflow tgsp unpack` of the same package.

Peak memory (max RSS) of each tgflow command is printed too: it must not grow with the
package (streamed), except materialize, which holds the decrypted adapter. Targets: push and
pull within 1.75x of skopeo (a Go binary; tgflow is a Python process that also starts its
CLI, and pull verifies), materialize within 1.5x of unpack.

    python scripts/bench_oci.py [--json] [--mib 64] [--runs 3]
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
sys.path.insert(0, str(ROOT))
import benchkit  # noqa: E402

PASS = "bench passphrase, not a secret"
TGFLOW = str(Path(sys.executable).with_name("tgflow"))


def timed(argv: list[str], env: dict, cwd: Path) -> tuple[float, int]:
    """Seconds and peak RSS (MiB) of one whole command; raises if it fails."""
    t = time.perf_counter()
    proc = subprocess.Popen(argv, env=env, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    took = time.perf_counter() - t
    if os.waitstatus_to_exitcode(status) not in (0, 20):
        raise SystemExit(f"{' '.join(argv[:3])} failed: {proc.stderr.read().decode()[-500:]}")
    return took, usage.ru_maxrss // 1024


def start_registry(tmp: Path) -> tuple[subprocess.Popen, str]:
    tmp.mkdir(exist_ok=True)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    (tmp / "registry.yml").write_text(f"version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n"
                                      f"    rootdirectory: {tmp / 'data'}\nhttp:\n  addr: 127.0.0.1:{port}\n")
    proc = subprocess.Popen(["docker-registry", "serve", str(tmp / "registry.yml")], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    for _ in range(100):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return proc, f"127.0.0.1:{port}"
        except OSError:
            time.sleep(0.1)
    raise SystemExit("docker-registry did not start")


def make_package(tmp: Path, mib: int, env: dict) -> Path:
    src = tmp / "adapter"
    src.mkdir()
    (src / "adapter_config.json").write_text('{"peft_type": "LORA", "r": 8, "lora_alpha": 16, '
                                             '"target_modules": ["q_proj", "v_proj"]}\n')
    with open(src / "adapter_model.safetensors", "wb") as f:
        for _ in range(mib):
            f.write(os.urandom(1 << 20))
    for argv in (["key", "generate", "release"], ["key", "generate", "operator", "--type", "recipient"],
                 ["tgsp", "build", str(src), "-o", str(tmp / "pkg.tgsp"), "--route", "support", "--version", "1",
                  "--kind", "adapter", "--recipient", "operator", "--sign", "release"]):
        subprocess.run([TGFLOW, *argv], env=env, check=True, capture_output=True)
    return tmp / "pkg.tgsp"


def median(samples: list[tuple[float, int]]) -> tuple[float, int]:
    return statistics.median(s[0] for s in samples), max(s[1] for s in samples)


def measure(tmp: Path, host: str, pkg: Path, runs: int, env: dict) -> dict:
    sh = lambda *a: subprocess.run(list(a), env=env, cwd=tmp, check=True, capture_output=True)  # noqa: E731
    sh(TGFLOW, "push", str(pkg), f"oci-layout:{tmp / 'layout'}:v1")
    sh(TGFLOW, "push", str(pkg), f"oci://{host}/bench/src:v1", "--plain-http")
    out = {k: [] for k in ("push", "skopeo_push", "pull", "skopeo_pull", "materialize", "unpack")}
    for i in range(runs):
        # a new registry (new port) for each push pair: skopeo remembers where it put blobs and
        # would mount them from an earlier repository instead of uploading them
        fresh, at = start_registry(tmp / f"push-{i}")
        try:
            out["push"].append(timed([TGFLOW, "push", str(pkg), f"oci://{at}/bench/tg:v1", "--plain-http"], env, tmp))
            out["skopeo_push"].append(timed(["skopeo", "copy", "--dest-tls-verify=false",
                                             f"oci:{tmp / 'layout'}:v1", f"docker://{at}/bench/sk:v1"], env, tmp))
        finally:
            fresh.terminate()
        out["pull"].append(timed([TGFLOW, "pull", f"oci://{host}/bench/src:v1", "-o", str(tmp / f"p{i}.tgsp"),
                                  "--plain-http"], env, tmp))
        t1 = timed(["skopeo", "copy", "--src-tls-verify=false", f"docker://{host}/bench/src:v1",
                    f"oci:{tmp / f'sk{i}'}:v1"], env, tmp)
        blob = max((tmp / f"sk{i}" / "blobs" / "sha256").iterdir(), key=lambda p: p.stat().st_size)
        t2 = timed([TGFLOW, "tgsp", "verify", str(blob)], env, tmp)
        out["skopeo_pull"].append((t1[0] + t2[0], max(t1[1], t2[1])))
        (tmp / f"p{i}.tgsp").unlink()
        shutil.rmtree(tmp / f"sk{i}")
    registry = tmp / "folder-registry"
    sh(TGFLOW, "route", "register", str(pkg), "--registry", str(registry), "--signing-key", "release",
       "--alias", "production")
    for i in range(runs):
        out["materialize"].append(timed([TGFLOW, "route", "materialize", "support", "--registry", str(registry),
                                         "--to", str(tmp / f"served{i}"), "--identity", "operator"], env, tmp))
        out["unpack"].append(timed([TGFLOW, "tgsp", "unpack", str(pkg), "-o", str(tmp / f"un{i}"), "--identity",
                                    "operator"], env, tmp))
        shutil.rmtree(tmp / f"served{i}")
        shutil.rmtree(tmp / f"un{i}")
    return {k: median(v) for k, v in out.items()}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mib", type=int, default=64)
    ap.add_argument("--runs", type=int, default=3)
    benchkit.add_json_flag(ap)
    args = ap.parse_args()
    if not (shutil.which("docker-registry") and shutil.which("skopeo")):
        raise SystemExit("needs Debian's docker-registry and skopeo (apt-get install docker-registry skopeo)")
    baseline = "skopeo copy (push; pull + tgflow tgsp verify) and tgflow tgsp unpack, same package, same registry"
    with benchkit.run("oci", baseline, args.json) as result, tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        env = {**os.environ, "TGFLOW_HOME": str(tmp / "home"), "TGFLOW_PASSPHRASE": PASS, "HOME": str(tmp),
               "XDG_CACHE_HOME": str(tmp / "cache")}
        reg, host = start_registry(tmp)
        try:
            pkg = make_package(tmp, args.mib, env)
            m = measure(tmp, host, pkg, args.runs, env)
        finally:
            reg.terminate()
        size = pkg.stat().st_size / (1 << 20)
        print(f"package: {size:.1f} MiB; median of {args.runs} whole commands each")
        result["rows"] = _rows(m, size)
        for r in result["rows"]:
            print(f"  {r['what']:<58} {r['value']:>7.2f} {r['unit']:<4} ratio {r['ratio']:.2f}  "
                  f"(target {r['target']}: {'ok' if r['ok'] else 'MISSED'})")
        for k in ("push", "pull", "materialize"):
            print(f"  peak memory, tgflow {k:<12} {m[k][1]:>5} MiB")
        result["peak_rss_mib"] = {k: m[k][1] for k in m}
    return benchkit.verdict(result["rows"])


def _rows(m: dict, size: float) -> list[dict]:
    push, pull, mat = m["push"][0] / m["skopeo_push"][0], m["pull"][0] / m["skopeo_pull"][0], \
        m["materialize"][0] / m["unpack"][0]
    return [
        benchkit.row(f"tgflow push ({size:.0f} MiB) vs skopeo copy", m["push"][0], "s", round(push, 2), "<= 1.75x",
                     push <= 1.75),
        benchkit.row("tgflow pull (verified) vs skopeo copy + tgsp verify", m["pull"][0], "s", round(pull, 2),
                     "<= 1.75x", pull <= 1.75),
        benchkit.row("tgflow route materialize vs tgsp unpack", m["materialize"][0], "s", round(mat, 2), "<= 1.5x",
                     mat <= 1.5),
    ]


if __name__ == "__main__":
    sys.exit(main())
