#!/usr/bin/env python3
"""Benchmark federated aggregation and update compression, in one run.

1. Aggregation of 16 sites x a 2M-parameter adapter (64 modules, 1024 x 1024, r = 16), from real
   signed and encrypted update packages: ``tgflow fed aggregate``'s screening (verify every
   package) and merge (module by module, one site's tensors decrypted at a time), for ``ffa``
   and ``exact``, against the baseline: the same packages verified and decrypted into memory,
   then the same tensors summed with plain numpy. Each measurement runs in its own process, so
   its peak memory (VmHWM over the RSS before the work) is its own; 4, 8 and 16 sites show
   whether memory grows with the number of sites. Target: ffa <= 1.5x the baseline, peak flat.
2. Compression of a real site update (the shipped tiny base model, 40 steps on site-a's feed):
   for each setting, the ratio to float32 and the part of the update lost, and the change of the
   held-out loss against the uncompressed update.

    python scripts/bench_fed.py [--sites 16] [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))
import benchkit  # noqa: E402
PASS = "bench-passphrase-long"
MODULES, D, R = 64, 1024, 16
ROUND = "bench"


def _hwm_mb() -> float:
    """This process's peak RSS (VmHWM). Not ru_maxrss: Linux carries that over from the parent
    across fork and exec, so a child started by a big parent would report the parent's size."""
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmHWM:")) / 1024


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _peak_mb() -> float:
    return _hwm_mb()


def _start():
    import torch

    g = torch.Generator().manual_seed(0)
    names = [f"base_model.model.layers.{i // 2}.{'q' if i % 2 else 'v'}_proj" for i in range(MODULES)]
    state = {}
    for n in names:
        state[n + ".lora_A.weight"] = torch.randn(R, D, generator=g) / D ** 0.5
        state[n + ".lora_B.weight"] = torch.randn(D, R, generator=g) * 1e-2
    return sorted(names), state


def _want(method: str, names, state) -> dict:
    from runners.fed import start, updates

    return {"format": updates.FORMAT, "route": "bench", "round": ROUND, "method": method,
            "base_model": {"sha256": "0" * 64}, "start": start.identity(None, 0, state),
            "lora": {"r": R, "alpha": 2 * R, "target_modules": ["q_proj", "v_proj"]},
            "modules_sha256": updates.modules_digest(names)}


def make_updates(tmp: Path, sites: int) -> None:
    """``sites`` real update packages per method, signed by their own site keys, encrypted to the aggregator."""
    import numpy as np

    import tgsp
    from tgsp.builder import in_memory
    from runners.fed import compress
    from runners.stages import site
    from runners.fed import updates

    kr = tgsp.Keyring(tmp / "home")
    kr.generate("aggregator", "recipient", lambda: PASS)
    names, state = _start()
    rng = np.random.default_rng(1)
    for i in range(sites):
        kr.generate(f"site-{i}", "signing", lambda: PASS)
        signer = kr.signer(f"site-{i}", lambda: PASS)
        for method in ("ffa", "exact"):
            final = {k: v if method == "ffa" and ".lora_A." in k else
                     v + rng.standard_normal(v.shape).astype(np.float32) * 1e-3 for k, v in state.items()}
            files, _ = site.encode_all(state, final, names, compress.Codec(), method, {})
            fed = {**_want(method, names, state), "examples": 100 + i, "weight_basis": "examples",
                   "compression": compress.Codec().to_dict(), "modules": len(names)}
            tgsp.build(tmp, tmp / f"{method}-{i}.tgsp", files=in_memory({**site.index_file(names),
                                                                         **site.delta_files(files)}), route="bench", kind=updates.KIND,
                       recipients=[kr.public_file("aggregator").key], signers=[signer], extra={"federation": fed})


def child(tmp: Path, mode: str, method: str, sites: int) -> dict:
    import tgsp
    from runners.stages import aggregation as agg_stage
    from runners.fed import updates

    kr = tgsp.Keyring(tmp / "home")
    idents = kr.identities("aggregator", lambda: PASS)
    names, state = _start()
    paths = [tmp / f"{method}-{i}.tgsp" for i in range(sites)]
    policy = kr.trust_policy(trusted=[f"site-{i}" for i in range(sites)], route="bench", kind=updates.KIND)
    before = _rss_mb()
    t0 = time.perf_counter()
    if mode == "baseline":
        _baseline(paths, policy, idents, names)
    else:
        screened = updates.screen(paths, policy, _want(method, names, state), {}, "examples", {k.keyid for k in idents})
        assert len(screened.accepted) == sites, screened.refused
        agg_stage.merge(screened.accepted, idents, state, names, method, R)
    return {"seconds": time.perf_counter() - t0, "peak_mb": _peak_mb() - before}


def _baseline(paths, policy, idents, names) -> None:
    """What any aggregator must do at least: verify and decrypt every update, then add the tensors up."""
    from safetensors.numpy import load

    from runners.fed import compress, updates
    from tgsp.unpack import read_payload

    loaded = []
    for p in paths:
        report, files = read_payload(p, policy, identities=idents)
        codec = updates.codec_of(report.manifest["federation"])
        tensors = []
        for k in range(len(names)):
            parts = load(files[updates.delta_file(k)])
            tensors += [compress.decode(sub, codec) for sub in updates.split_factors(parts)[:2] if sub]
        loaded.append(tensors)
    total = [t.copy() for t in loaded[0]]
    for tensors in loaded[1:]:
        for acc, t in zip(total, tensors):
            acc += t


def run_child(tmp: Path, mode: str, method: str, sites: int) -> dict:
    out = subprocess.run([sys.executable, __file__, "--child", str(tmp), mode, method, str(sites)],
                         check=True, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "2"})
    return json.loads(out.stdout.strip().splitlines()[-1])


def aggregation(sites: int, repeat: int) -> list[dict]:
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-fed-") as t:
        tmp = Path(t)
        t0 = time.perf_counter()
        make_updates(tmp, sites)
        size = (tmp / "exact-0.tgsp").stat().st_size
        print(f"made {2 * sites} update packages ({MODULES} modules, {2 * MODULES * D * R / 1e6:.1f}M parameters, "
              f"{size / 1e6:.2f} MB each for exact) in {time.perf_counter() - t0:.1f} s")
        for method in ("ffa", "exact"):
            base = min((run_child(tmp, "baseline", method, sites) for _ in range(repeat)), key=lambda r: r["seconds"])
            print(f"{method}: baseline (verify + decrypt all into memory, numpy sum): {base['seconds']:.3f} s, "
                  f"peak +{base['peak_mb']:.0f} MB")
            for n in sorted({n for n in (4, 8, sites) if n <= sites}):
                ours = min((run_child(tmp, "merge", method, n) for _ in range(repeat)), key=lambda r: r["seconds"])
                line = f"  fed aggregate, {n:2d} sites: {ours['seconds']:.3f} s, peak +{ours['peak_mb']:.0f} MB"
                if n == sites:
                    target = " (target <= 1.5x)" if method == "ffa" else " (includes the SVD re-factorization)"
                    line += f"; {ours['seconds'] / base['seconds']:.2f}x the baseline{target}"
                    ratio = ours["seconds"] / base["seconds"]
                    rows.append(benchkit.row(f"fed aggregate {method}, {n} sites", ours["seconds"], "s", ratio,
                                             "<= 1.5x" if method == "ffa" else "", ratio <= 1.5 if method == "ffa" else None))
                print(line)
    return rows


SETTINGS = [("float32 (none)", "none", 256, None), ("int8, one scale per tensor", "int8-block", 0, None),
            ("int8, scale per 256 (default)", "int8-block", 256, None), ("int8, scale per 64", "int8-block", 64, None),
            ("top-10% + int8/256", "int8-block", 256, 0.10), ("top-5% + int8/256", "int8-block", 256, 0.05),
            ("top-1% + int8/256", "int8-block", 256, 0.01)]


def _site_round(tmp: Path):
    """A real site round on the shipped tiny base, its update sent losslessly (quantize none)."""
    from tgflow_cli.main import main

    os.environ.update({"TGFLOW_HOME": str(tmp / "home"), "TGFLOW_PASSPHRASE": PASS})
    for name, kind in (("site", "signing"), ("aggregator", "recipient")):
        assert main(["key", "generate", name, "--type", kind]) == 0
    ex = ROOT / "examples"
    spec = {"route_key": "support", "base_model_ref": str(ex / "tiny-base"),
            "feed": {"type": "jsonl", "uri": str(ex / "feeds/fed/site-a.jsonl")},
            "reference": {"type": "jsonl", "uri": str(ex / "feeds/reference.jsonl")},
            "eval": {"type": "jsonl", "uri": str(ex / "feeds/fed/eval.jsonl")}, "policy": {"min_novel_examples": 8},
            "lora": {"r": 8, "alpha": 16}, "training": {"steps": 40, "batch_size": 16, "learning_rate": 0.003,
                                                       "seed": 7, "max_seq_len": 96},
            "federation": {"round": "r", "aggregator": "aggregator", "compression": {"quantize": "none"}},
            "output": {"path": str(tmp / "update.tgsp"), "signing_key": "site", "recipients": ["aggregator"]}}
    (tmp / "spec.json").write_text(json.dumps(spec))
    assert main(["-q", "peft", "run", "--spec", str(tmp / "spec.json"), "--json"]) == 0


def compression() -> None:
    import numpy as np
    import tgsp
    from peft import set_peft_model_state_dict
    from safetensors.numpy import load

    from runners.data import feeds
    from runners.learn import model as model_mod
    from runners.learn.batches import tokenize
    from runners.learn.evaluate import mean_loss
    from runners.fed import compress
    from runners.stages import site
    from runners.fed import start, updates
    from runners.spec import FeedSpec, LoraSpec
    from runners.learn.train import add_lora
    from tgsp.unpack import read_payload

    with tempfile.TemporaryDirectory(prefix="bench-fed-c-") as t:
        tmp = Path(t)
        _site_round(tmp)
        kr = tgsp.Keyring(tmp / "home")
        _, files = read_payload(tmp / "update.tgsp", kr.trust_policy(), identities=kr.identities("aggregator", lambda: PASS))
    tok, model = model_mod.load(ROOT / "examples/tiny-base", model_mod.pick_device("fp32"))
    model = add_lora(model, LoraSpec(r=8, alpha=16), 7)
    start.fresh_init(model, 7)
    s0 = start.lora_state(model)
    names = start.modules(s0)
    raw = [load(files[updates.delta_file(k)]) for k in range(len(names))]
    exact_state = site.decoded_state(s0, raw, names, compress.Codec("none", 256, None))
    deltas = {k: (exact_state[k] - s0[k]).numpy() for k in s0}
    ev = feeds.load_feed(FeedSpec(type="jsonl", uri=str(ROOT / "examples/feeds/fed/eval.jsonl")), ROOT).examples
    data = tokenize(tok, ev, 96)

    def loss_of(state):
        set_peft_model_state_dict(model, state, adapter_name="default")
        return mean_loss(model, tok, data, "cpu")

    base_loss = loss_of(exact_state)
    print(f"\ncompression of a real site update ({sum(v.size for v in deltas.values())} values; held-out loss "
          f"{base_loss:.4f} uncompressed):")
    for label, q, block, topk in SETTINGS:
        codec = lambda v: compress.Codec(q, block or v.size, topk)  # noqa: E731 - block 0: the whole tensor
        enc = {k: compress.encode(v, codec(v))[0] for k, v in deltas.items()}
        dec = {k: compress.decode(p, codec(deltas[k])) for k, p in enc.items()}
        lost = np.sqrt(sum(float(((dec[k] - v) ** 2).sum()) for k, v in deltas.items())
                       / sum(float((v ** 2).sum()) for v in deltas.values()))
        worst = max(float(np.linalg.norm(dec[k] - v) / max(np.linalg.norm(v), 1e-30)) for k, v in deltas.items())
        ratio = sum(v.size * 4 for v in deltas.values()) / sum(compress.stored_bytes(p) for p in enc.values())
        loss = loss_of({k: s0[k] + __import__("torch").from_numpy(dec[k]) for k in s0})
        print(f"  {label:32s} {ratio:6.1f}x  update lost {lost * 100:6.2f}% (worst tensor {worst * 100:6.2f}%)  "
              f"held-out loss {loss:.4f} ({(loss - base_loss) / base_loss * 100:+.2f}%)")


def heavy_tails() -> None:
    """Why one scale per block: a heavy-tailed tensor (Student-t, 2 degrees of freedom), int8."""
    import numpy as np

    from runners.fed import compress

    x = np.random.default_rng(0).standard_t(2, 1 << 20).astype(np.float32)
    print("\nint8 on a heavy-tailed tensor (1M values, Student-t with 2 dof):")
    for label, block in (("one scale per tensor", x.size), ("scale per 256", 256), ("scale per 64", 64)):
        codec = compress.Codec("int8-block", block, None)
        parts, _ = compress.encode(x, codec)
        err = np.linalg.norm(compress.decode(parts, codec) - x) / np.linalg.norm(x)
        print(f"  {label:22s} {x.nbytes / compress.stored_bytes(parts):4.1f}x  error {err * 100:6.2f}%")


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sites", type=int, default=16)
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--child", nargs=4)
    ap.add_argument("--quick", action="store_true", help="aggregation only (bench_all.sh)")
    benchkit.add_json_flag(ap)
    args = ap.parse_args()
    if args.child:
        tmp, mode, method, n = args.child
        print(json.dumps(child(Path(tmp), mode, method, int(n))))
        return 0
    with benchkit.run("fed", "verify + decrypt every update into memory and sum them with numpy, same run",
                      args.json) as res:
        res["rows"] = aggregation(args.sites, args.repeat)
        if not args.quick:
            compression()
            heavy_tails()
    return benchkit.verdict(res["rows"])


if __name__ == "__main__":
    sys.exit(main())
