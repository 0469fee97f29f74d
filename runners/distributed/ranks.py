"""A round under torchrun: rank 0 leads, the other ranks only train.

Rank 0 runs the round exactly as one process does: it holds the route's lock, the
ledger and the accountant, selects the data, plans DP, evaluates, and is the only
rank that writes (checkpoints, evidence, the package, the registry). Right before
training it sends the other ranks a ``Job``: the training data, the adapter's start
tensors, the settings, the DP mechanism and the checkpoint to resume from. Every rank
then trains its share (runners/learn/train.py with the world), and at the end rank 0 sends
its exit code so that every rank, and so the platform's job, ends with the same one.
"""

from __future__ import annotations

from tgsp.errors import Interrupted, RoundOutcome

from .. import outcomes
from ..learn import model as model_mod
from ..learn.dp_sgd import DPRandom
from ..learn.train import DPRun, add_lora, train
from ..spec import LoraSpec, TrainingSpec
from . import messages
from .messages import Job
from .world import World


class _Given:
    """A checkpoint store for a following rank: it resumes from what rank 0 sent, and never writes."""

    def __init__(self, ckpt) -> None:
        self.ckpt = ckpt

    def load(self, fingerprint: dict):
        return self.ckpt

    def save(self, ckpt) -> None:
        raise RuntimeError("only rank 0 writes checkpoints")


def lead(world: World, model, data: list, spec, dp_run, limit, fingerprint: dict, store) -> None:
    """Rank 0, just before training: send the job."""
    start = {n: p.detach().cpu().clone() for n, p in model.named_parameters() if p.requires_grad}
    job = Job(data, spec.training.model_dump(mode="json"), spec.lora.model_dump(mode="json"), start,
              dp_run.config if dp_run else None, limit, fingerprint, store.load(fingerprint))
    world.broadcast_bytes(messages.encode_job(job))


def finish(world: World, code: int, trained: bool) -> None:
    """Rank 0, at the end: if the round stopped before training, say so; then the exit code."""
    if not trained:
        world.broadcast_bytes(messages.NOT_TRAINED)
    world.broadcast_bytes(messages.encode_code(code))


def code_of(exc: BaseException | None) -> int:
    if exc is None:
        return 0
    if isinstance(exc, Interrupted):
        return outcomes.code("interrupted-resumable")
    if isinstance(exc, RoundOutcome):
        return outcomes.code(exc.outcome)
    return outcomes.code("failed")


def follow(world: World, opened, prepared, stop=None) -> int:
    """A rank other than 0: train what rank 0 sends; return rank 0's exit code."""
    job = _receive(world)
    if job == messages.NOT_TRAINED_KIND:  # rank 0 ended the round before training (a skip, a refusal, an error)
        return _receive(world)
    try:
        _train(world, opened, prepared, job, stop)
    except Interrupted:
        pass  # rank 0 saved the checkpoint; its exit code (75) follows
    return _receive(world)


def _receive(world: World):
    return messages.decode(world.broadcast_bytes(None))


def _train(world: World, opened, prepared, job: Job, stop) -> None:
    import torch

    device = model_mod.pick_device(opened.spec.training.precision)
    tok, model = model_mod.load(prepared.model_path, device, tok=prepared.tok)
    model = add_lora(model, LoraSpec(**job.lora), TrainingSpec(**job.training).seed)
    params = dict(model.named_parameters())
    with torch.no_grad():
        for name, tensor in job.start.items():
            params[name].copy_(tensor.to(params[name].device, params[name].dtype))
    dp = DPRun(job.dp, DPRandom(device.name)) if job.dp is not None else None
    train(model, tok, job.data, TrainingSpec(**job.training), device.name, _Given(job.checkpoint), job.fingerprint,
          stop=stop, dp=dp, limit=job.limit, world=world)
