#!/usr/bin/env python3
"""Benchmark a DP-SGD step against a non-DP step: same model, data, batches, run.

Three loops on identical model copies in one process, on the same batches,
interleaved step by step so machine drift hits them alike:
  nondp   our plain LoRA step (per-example token-mean loss, AdamW)
  dp      our DP-SGD step: per-example gradients from the LoRA factors' backward, global
          clipping, Gaussian noise, division by the fixed batch size
  opacus  Opacus 1.x hooks mode (GradSampleModule + DPOptimizer) on the same
          peft model, when it runs; reported, never required

The batches are fixed (not Poisson samples) so every loop does the same work.
Prints the median milliseconds per step and the ratios to the non-DP step.

  CPU (default without a GPU): the shipped tiny base model, support tickets.
  GPU: a Llama-architecture model of 1.1B parameters (the TinyLlama shape) at
       random init, bf16, sequence length <= 512, batch 8.

    python scripts/bench_dp.py [--device cpu|cuda] [--steps N] [--json]
Targets (issue #4): dp/nondp <= 1.15 on the CPU tiny model, <= 1.25 on the GPU.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

import benchkit  # noqa: E402
from bench_train import _sync, _Tok, build_data, build_model, parse_args  # noqa: E402

TARGETS = {"cpu": 1.15, "cuda": 1.25}
MODULES = ["q_proj", "k_proj", "v_proj", "o_proj"]


def _batches(args, data):
    from runners.learn.train import micro_batch

    return [[data[i] for i in micro_batch(step, len(data), args.batch, 0)] for step in range(args.steps)]


def _lora(model):
    from runners.spec import LoraSpec
    from runners.learn.train import add_lora

    return add_lora(model, LoraSpec(r=16, alpha=32, target_modules=MODULES), 0)


def make_nondp(args, model, pad):
    import torch

    from runners.learn.batches import collate, per_example_loss

    model = _lora(model)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-4)
    model.train()

    def step(items):
        ids, mask, labels = collate(items, pad, args.device)
        per_example_loss(model(input_ids=ids, attention_mask=mask).logits, labels).mean().backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)

    return step


def make_dp(args, model, pad):
    import torch

    from runners.learn.dp_sgd import DPConfig, DPRandom, PerExampleClipper
    from runners.learn.train import DPRun, dp_gradient

    model = _lora(model)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    run = DPRun(DPConfig(1.0, 1.0, 0.01, args.batch), DPRandom(args.device))
    clipper = PerExampleClipper(model, 1.0)
    model.train()

    def step(items):
        dp_gradient(model, _Tok(pad), items, args.batch, args.device, clipper, run)
        opt.step()
        opt.zero_grad(set_to_none=True)

    return step


def make_opacus(args, model, pad):
    import torch
    from opacus import GradSampleModule
    from opacus.optimizers import DPOptimizer

    from runners.learn.batches import collate, per_example_loss

    model = GradSampleModule(_lora(model), batch_first=True, loss_reduction="sum")
    opt = DPOptimizer(torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4),
                      noise_multiplier=1.0, max_grad_norm=1.0, expected_batch_size=args.batch)
    model.train()

    def step(items):
        ids, mask, labels = collate(items, pad, args.device)
        per_example_loss(model(input_ids=ids, attention_mask=mask).logits, labels).sum().backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    return step


MAKERS = {"nondp": make_nondp, "dp": make_dp, "opacus": make_opacus}


def measure(args) -> dict:
    """Interleaved: each batch goes through every loop in turn (rotating the
    order), so machine drift hits all of them alike. Median ms per step."""
    import statistics

    import torch

    if args.device == "cpu":
        torch.set_num_threads(max(1, os.cpu_count() or 1))
    data, pad = build_data(args.model)
    data = [d for d in data if len(d.input_ids) <= args.seq_len] or data
    batches = _batches(args, [type(d)(d.input_ids[: args.seq_len], d.labels[: args.seq_len]) for d in data])
    steps, errors, params = {}, {}, 0
    for name in ["nondp", "dp"] + ([] if args.no_opacus else ["opacus"]):
        try:
            model = build_model(args.model, args.device, args.dtype)
            model.config.use_cache = False
            params = sum(p.numel() for p in model.parameters())
            steps[name] = MAKERS[name](args, model, pad)
            steps[name](batches[0])  # fail here, not mid-measurement
        except Exception as exc:  # Opacus is optional: report why it did not run
            if name != "opacus":
                raise
            steps.pop(name, None)
            errors[name] = f"{type(exc).__name__}: {exc}"[:300]
    times: dict[str, list[float]] = {n: [] for n in steps}
    peaks: dict[str, float] = {n: 0.0 for n in steps}
    order = list(steps)
    for _ in range(args.repeat):
        for i, items in enumerate(batches):
            order = order[1:] + order[:1]
            for name in order:
                if args.device == "cuda":
                    torch.cuda.reset_peak_memory_stats()
                _sync(args.device)
                t0 = time.perf_counter()
                steps[name](items)
                _sync(args.device)
                if i >= args.warmup:
                    times[name].append(time.perf_counter() - t0)
                if args.device == "cuda":
                    peaks[name] = max(peaks[name], torch.cuda.max_memory_allocated() / 2**20)
    results = {n: {"ms_per_step": statistics.median(t) * 1000, "ms_mean": statistics.fmean(t) * 1000,
                   **({"peak_mib": peaks[n]} if args.device == "cuda" else {})} for n, t in times.items()}
    return {"results": results, "errors": errors, "params": params}


def main() -> int:
    args = parse_args("DP-SGD step benchmark (see module docstring)", list(MAKERS), repeat=3, steps=(25, 40),
                      seq_len=(512, 96), gpu_model="1.1b", extra=lambda ap: ap.add_argument("--no-opacus", action="store_true"))
    with benchkit.run("dp", "the same LoRA step without DP, same batches, interleaved (and Opacus where it runs)",
                      args.json) as res:
        summary = _summary(args, measure(args))
        res.update(summary)
        ratio, target = summary["dp_over_nondp"], summary["target"]
        res["rows"] = [benchkit.row(f"DP-SGD step vs non-DP step ({args.device})",
                                    summary["results"]["dp"]["ms_per_step"] / 1000, "s", ratio, f"<= {target}x",
                                    ratio <= target)]
        _print(args, summary)
    return benchkit.verdict(res["rows"])


def _summary(args, out: dict) -> dict:
    results, errors = out["results"], out["errors"]
    base = results["nondp"]["ms_per_step"]
    ratio = results["dp"]["ms_per_step"] / base
    target = TARGETS[args.device]
    summary = {"device": args.device, "model": args.model, "params": out["params"], "batch": args.batch,
               "seq_len": args.seq_len, "steps": args.steps, "warmup": args.warmup, "passes": args.repeat,
               "results": results, "errors": errors, "dp_over_nondp": ratio, "target": target,
               "within_target": ratio <= target,
               "opacus_over_nondp": results["opacus"]["ms_per_step"] / base if "opacus" in results else None,
               "opacus_error": errors.get("opacus")}
    if args.device == "cuda":
        import torch

        summary["gpu"] = torch.cuda.get_device_name(0)
    return summary


def _print(args, summary: dict) -> None:
    results, errors = summary["results"], summary["errors"]
    base = results["nondp"]["ms_per_step"]
    print(f"{args.model} model ({summary['params'] / 1e6:.2f}M base params) on {summary.get('gpu', args.device)}, "
          f"batch {args.batch}, seq <= {args.seq_len}, {args.steps} steps x {args.repeat} passes "
          f"({args.warmup} warm-up), interleaved, median per step")
    for name in ["nondp", "dp", "opacus"]:
        if name in results:
            r = results[name]
            mem = f"   peak {r['peak_mib']:.0f} MiB" if "peak_mib" in r else ""
            print(f"  {name:<7} {r['ms_per_step']:>9.1f} ms/step   {r['ms_per_step'] / base:5.3f}x{mem}")
        elif name in errors:
            print(f"  {name:<7} failed: {errors[name]}")
    ratio, target = summary["dp_over_nondp"], summary["target"]
    print(f"  dp/nondp {ratio:.3f}x  [{'PASS' if ratio <= target else 'MISS'}] target <= {target}x")


if __name__ == "__main__":
    sys.exit(main())
