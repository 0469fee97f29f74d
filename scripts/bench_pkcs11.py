#!/usr/bin/env python3
"""Benchmark signing with a PKCS#11 token key (SoftHSM2) against a software key.

In one run, on a fresh token in a private SOFTHSM2_CONF:
  - one Ed25519 signature: software (cryptography) vs the token, as tgflow
    does it (open a session, log in, check the key, C_Sign, log out), and the
    bare C_Sign inside one open session (to show what the login costs);
  - one hybrid package signature (`tgsp.sign`, Ed25519 + ML-DSA-65, the
    package checked first) with a software key vs a token key.
Prints medians and the token/software ratios. No target: signing happens
once per package, so what matters is that it stays well under a second.

    python scripts/bench_pkcs11.py [--repeat 200] [--json]

Needs softhsm2 (apt-get install softhsm2) and tgflow[pkcs11].
"""

from __future__ import annotations

import argparse
import os
import shutil
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

MODULES = ("/usr/lib/softhsm/libsofthsm2.so", "/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so")
PIN, PASS = "4321", "bench-passphrase"


def median_ms(fn, repeat: int) -> float:
    fn()  # warm
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1000


def setup(work: Path) -> str:
    module = next((m for m in MODULES if os.path.isfile(m)), None)
    if module is None or not shutil.which("softhsm2-util"):
        sys.exit("needs SoftHSM2: apt-get install softhsm2")
    (work / "tokens").mkdir()
    conf = work / "softhsm2.conf"
    conf.write_text(f"directories.tokendir = {work / 'tokens'}\nobjectstore.backend = file\nlog.level = ERROR\n")
    os.environ.update(SOFTHSM2_CONF=str(conf), TGFLOW_PKCS11_MODULE=module, TGFLOW_PKCS11_PIN=PIN)
    subprocess.run(["softhsm2-util", "--init-token", "--free", "--label", "bench", "--pin", PIN, "--so-pin", "12345678"],
                   check=True, capture_output=True)
    return module


def main() -> int:
    ap = argparse.ArgumentParser(description="PKCS#11 signing benchmark (see module docstring)")
    ap.add_argument("--repeat", type=int, default=200)
    benchkit.add_json_flag(ap)
    args = ap.parse_args()
    with benchkit.run("pkcs11", "the same signatures with a software key", args.json) as result:
        r = _measure(args.repeat)
        _report(r)
        token = r["tgsp sign, hybrid, 1 MiB package (token key)"]
        soft = r["tgsp sign, hybrid, 1 MiB package (software key)"]
        result["rows"] = [
            benchkit.row("Ed25519 sign, token vs software", r["token Ed25519 sign (session + login + C_Sign)"] / 1000, "s",
                         r["token Ed25519 sign (session + login + C_Sign)"] / r["software Ed25519 sign"]),
            benchkit.row("tgsp sign of a 1 MiB package, token vs software key", token / 1000, "s", token / soft)]
        result["medians_ms"] = r
    return 0


def _measure(repeat: int) -> dict:
    work = Path(tempfile.mkdtemp(prefix="tgflow-bench-pkcs11-"))
    try:
        setup(work)
        import tgsp
        from tgsp import dsse, pkcs11 as P
        from tgsp.keyring import Keyring

        kr = Keyring(work / "home")
        kr.generate("soft", "signing", lambda: PASS)
        kr.generate("hard", "signing", lambda: PASS, pkcs11="pkcs11:token=bench;object=hard;id=%01")
        soft, hard = kr.signer("soft", lambda: PASS), kr.signer("hard", lambda: PASS)
        message = dsse.pae(dsse.MANIFEST_TYPE, os.urandom(2048))  # a manifest-sized payload
        soft_ed = soft.key.seeds["ed25519"]
        token_ed = hard.key._components["ed25519"]

        from cryptography.hazmat.primitives.asymmetric import ed25519
        sw = ed25519.Ed25519PrivateKey.from_private_bytes(soft_ed)
        r = {"software Ed25519 sign": median_ms(lambda: sw.sign(message), repeat),
             "token Ed25519 sign (session + login + C_Sign)": median_ms(lambda: token_ed.sign(message), repeat)}
        with P.Session(token_ed.uri, lambda: PIN) as s:
            r["token Ed25519 C_Sign in an open session"] = median_ms(lambda: s.sign(token_ed.uri, message), repeat)

        src = work / "src"
        src.mkdir()
        (src / "adapter_model.safetensors").write_bytes(os.urandom(1 << 20))
        for name, signer in (("software", soft), ("token", hard)):
            pkg = work / f"{name}.tgsp"
            tgsp.build(src, pkg, signers=[signer])
            r[f"tgsp sign, hybrid, 1 MiB package ({name} key)"] = median_ms(
                lambda: tgsp.sign(pkg, signer), max(20, repeat // 10))
            assert tgsp.verify(pkg, kr.trust_policy()).ok
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return r


def _report(r: dict) -> None:
    for k, v in r.items():
        print(f"  {k:<52} {v:8.3f} ms")
    print(f"\n  token / software, one Ed25519 signature: {r['token Ed25519 sign (session + login + C_Sign)'] / r['software Ed25519 sign']:.1f}x"
          f" ({r['token Ed25519 C_Sign in an open session'] / r['software Ed25519 sign']:.1f}x without the login)")
    print(f"  token / software, one package signature: "
          f"{r['tgsp sign, hybrid, 1 MiB package (token key)'] / r['tgsp sign, hybrid, 1 MiB package (software key)']:.2f}x")


if __name__ == "__main__":
    sys.exit(main())
