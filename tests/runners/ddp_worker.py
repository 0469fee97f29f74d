"""A training run for tests/runners/test_ddp.py: one process, or one rank under torchrun.

    python tests/runners/ddp_worker.py OUT plain|dp|noise [STOP_AT]

Builds a tiny Llama with LoRA from a config (no downloads), trains it with runners.learn.train
on seeded data, and (rank 0 only) writes OUT/lora.safetensors and OUT/result.json."""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))


class Tok:
    pad_token_id = 0


def _Recording(folder, log, rank):
    """The real checkpoint store, noting which rank saved (only rank 0 may)."""
    from runners.state import keys
    from runners.state.checkpoint import CheckpointStore

    class Recording(CheckpointStore):
        def save(self, ckpt):
            with open(log, "a") as f:
                f.write(f"{rank}\n")
            super().save(ckpt)

    return Recording(folder, keys.from_secret("ddp-test", b"ddp worker test state secret 32b"))


def main() -> None:
    import torch
    from safetensors.torch import save_file
    from transformers import LlamaConfig, LlamaForCausalLM

    from runners.learn.batches import IGNORE, Tokenized
    from runners.distributed.world import check_batch, open_world
    from runners.learn.dp_sgd import DPConfig, DPRandom
    from runners.spec import LoraSpec, TrainingSpec
    from runners.learn.train import DPRun, add_lora, train
    from tgsp.errors import Interrupted

    out, mode = Path(sys.argv[1]), sys.argv[2]
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                      num_key_value_heads=4, max_position_embeddings=64)
    model = add_lora(LlamaForCausalLM(cfg), LoraSpec(r=4, alpha=8, target_modules=["q_proj", "v_proj"]), 0)
    g = torch.Generator().manual_seed(1)
    data = []
    for n in torch.randint(4, 24, (64,), generator=g).tolist():
        ids = torch.randint(3, 64, (n,), generator=g).tolist()
        data.append(Tokenized(ids, [IGNORE] * n if mode == "noise" else [IGNORE] + ids[1:]))
    world = open_world("cpu")
    spec = TrainingSpec(steps=int(os.environ.get("STEPS", "6")), batch_size=8, gradient_accumulation=2,
                        learning_rate=1e-2, seed=3, checkpoint_every=2, max_seq_len=32)
    check_batch(world, spec.batch_size)
    dp = DPRun(DPConfig(1.0, 1.0, 0.25, 16), DPRandom("cpu")) if mode in ("dp", "noise") else None
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    if os.environ.get("STOP_RANK") == str(world.rank if world else 0):  # a SIGTERM on this rank mid-run
        _stop_after(model, int(os.environ["STOP_AFTER"]), stop)
    rank = world.rank if world else 0
    store = _Recording(out / "checkpoints", out / "savers.txt", rank)
    try:
        if mode == "noise":
            result = _noise(model, data, dp, world, out)
        else:
            r = train(model, Tok(), data, spec, "cpu", store, {"run": mode}, dp=dp, world=world, stop=stop)
            result = {"losses": r.losses, "steps": r.steps, "tokens": r.tokens, "resumed_from": r.resumed_from}
    except Interrupted:
        (out / f"interrupted-{rank}").write_text("")
        sys.exit(75)
    finally:
        if world:
            world.close()
    if rank == 0:
        state = {n: p.detach().contiguous() for n, p in model.named_parameters() if p.requires_grad}
        save_file(state, str(out / "lora.safetensors"))
        (out / "result.json").write_text(json.dumps(result))


def _stop_after(model, calls: int, stop) -> None:
    """Set ``stop`` (as the SIGTERM handler does) after ``calls`` forward passes on this rank."""
    seen = [0]

    def hook(*_):
        seen[0] += 1
        if seen[0] == calls:
            os.kill(os.getpid(), signal.SIGTERM)

    model.register_forward_hook(hook)


def _noise(model, data, dp, world, out):
    """One DP step on examples whose loss is zero: the gradient is the noise alone, over B."""
    import torch

    from runners.learn.dp_sgd import PerExampleClipper
    from runners.learn.train import dp_step, share_sampling

    clipper = PerExampleClipper(model, dp.config.max_grad_norm, world)
    if world is not None:
        share_sampling(dp, world)
    model.train()
    dp_step(model, Tok(), data, 8, "cpu", clipper, dp, world)
    grads = torch.cat([p.grad.flatten() for p in model.parameters() if p.requires_grad])
    return {"std": float(grads.std()), "n": grads.numel(), "expected": 1.0 * 1.0 / 16}


if __name__ == "__main__":
    main()
