"""peft run under torchrun: the process group, and the few collectives the round needs.

torchrun (or Kubeflow Trainer, SageMaker's torch_distributed, Vertex/Azure ML
PyTorch distribution, all of which start torchrun-style workers) sets WORLD_SIZE,
RANK, LOCAL_RANK, MASTER_ADDR and MASTER_PORT. With WORLD_SIZE > 1, ``open_world``
initializes torch.distributed: gloo on the CPU, NCCL on CUDA. Nothing here is a
scheduler or a transport of its own; it is torch.distributed's collectives.

Work split: every rank takes its contiguous share of each global micro-batch (and,
under DP, of each global Poisson sample); gradients are summed across ranks before
the optimizer step, so the step is the one a single process takes on the whole
batch. Under DP the clipped per-example sums are summed across ranks and the noise
is added once, on rank 0, before the sum.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta
from typing import Mapping

from tgsp.errors import InputError

RENDEZVOUS = ("MASTER_ADDR", "MASTER_PORT")


@dataclass(frozen=True)
class World:
    rank: int
    size: int
    local_rank: int
    backend: str

    @property
    def main(self) -> bool:
        return self.rank == 0

    def share(self, items: list) -> list:
        """This rank's contiguous share of a global batch (sizes differ by at most one)."""
        n = len(items)
        lo, hi = self.rank * n // self.size, (self.rank + 1) * n // self.size
        return items[lo:hi]

    def sum_(self, tensor) -> None:
        import torch.distributed as dist

        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)

    def any(self, flag: bool) -> bool:
        """True on every rank when it is true on any (a SIGTERM on one rank stops all)."""
        import torch
        import torch.distributed as dist

        t = torch.tensor([1 if flag else 0], dtype=torch.int32)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return bool(t.item())

    def broadcast_bytes(self, data: bytes | None) -> bytes:
        """Rank 0's ``data`` on every rank: a length, then the bytes, as CPU tensors (gloo).
        Never pickle: what crosses the process group is bytes that runners/distributed/messages.py
        decodes with msgpack and safetensors."""
        import torch
        import torch.distributed as dist

        size = torch.tensor([len(data) if self.main else 0], dtype=torch.int64)
        dist.broadcast(size, src=0)
        buf = (torch.frombuffer(bytearray(data), dtype=torch.uint8) if self.main and size.item()
               else torch.empty(int(size.item()), dtype=torch.uint8))
        dist.broadcast(buf, src=0)
        return data if self.main else buf.numpy().tobytes()

    def share_generator(self, generator) -> None:
        """Rank 0's generator state on every rank (under DP: one global Poisson sample)."""
        own = generator.get_state()
        raw = self.broadcast_bytes(state_bytes(own) if self.main else None)
        if len(raw) != own.numel():  # set_state takes any bytes: a state of another generator kind is refused
            raise InputError("a rank received a generator state from rank 0 that does not fit its own",
                             hint="every node must run the same tgflow version on the same kind of device")
        generator.set_state(state_from_bytes(raw))

    def close(self) -> None:
        import torch.distributed as dist

        if dist.is_initialized():
            dist.destroy_process_group()


def state_bytes(state) -> bytes:
    """A generator's state (a uint8 tensor) as bytes, and back."""
    return state.numpy().tobytes()


def state_from_bytes(raw: bytes):
    import torch

    return torch.frombuffer(bytearray(raw), dtype=torch.uint8).clone()


def _int(env: Mapping[str, str], name: str, default: str | None = None) -> int:
    raw = env.get(name, default)
    try:
        value = int(raw)
    except (TypeError, ValueError):
        raise InputError(f"{name}={raw!r} is not an integer", hint="start peft run with torchrun") from None
    return value


def world_size(env: Mapping[str, str] = os.environ) -> int:
    return _int(env, "WORLD_SIZE", "1")


def open_world(device: str, env: Mapping[str, str] = os.environ, timeout_s: float = 600) -> World | None:
    """The process group, when started by torchrun with more than one process; else None."""
    size = world_size(env)
    if size <= 1:
        return None
    missing = [v for v in RENDEZVOUS if not env.get(v)]
    if missing:
        raise InputError(f"WORLD_SIZE is {size} but {', '.join(missing)} is not set: there is no rendezvous",
                         hint="start it with torchrun --nproc-per-node N (and --nnodes, --rdzv-endpoint)")
    rank, local = _int(env, "RANK"), _int(env, "LOCAL_RANK", "0")
    if not 0 <= rank < size:
        raise InputError(f"RANK {rank} is outside WORLD_SIZE {size}")
    import torch
    import torch.distributed as dist

    # CUDA tensors (the gradients) go through NCCL; the small CPU ones (stop flags, messages) through gloo.
    backend = "cpu:gloo,cuda:nccl" if device.startswith("cuda") else "gloo"
    if device.startswith("cuda"):
        torch.cuda.set_device(local)
    dist.init_process_group(backend, rank=rank, world_size=size, timeout=timedelta(seconds=timeout_s))
    world = World(rank, size, local, backend)
    kind = torch.tensor([1 if device.startswith("cuda") else 0], dtype=torch.int32)
    low, high = kind.clone(), kind.clone()
    dist.all_reduce(low, op=dist.ReduceOp.MIN)
    dist.all_reduce(high, op=dist.ReduceOp.MAX)
    if low.item() != high.item():
        world.close()
        raise InputError("mixed devices across ranks (cpu, cuda): every rank must train on the same kind of device",
                         hint="give every node the same accelerators, or none")
    return world


def check_batch(world: World | None, batch_size: int, what: str = "training.batch_size") -> None:
    if world is not None and batch_size % world.size:
        raise InputError(f"{what} {batch_size} does not divide among {world.size} processes",
                         hint=f"make it a multiple of {world.size}, or start fewer processes")
