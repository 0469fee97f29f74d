"""Stage 4, update: the LoRA, warm-started from the route's production
adapter (``training.init: last-release``) or fresh on the base model, trained
by the recipe in runners/learn/train.py under the round's privacy mode."""

from __future__ import annotations

import math

from dataclasses import dataclass
from typing import Any

from tgsp.errors import InputError

from ..distributed import ranks
from ..fed import start
from ..learn import adapters, losses, probe as gradients
from ..learn.batches import tokenize
from ..learn.train import TrainResult, add_lora, check_target_modules, lora_config, total_steps, train
from .inputs import Inputs
from .select import Selection


@dataclass
class Update:
    model: Any  # a PeftModel whose adapter "default" is the new adapter
    result: TrainResult
    warm_start: bool
    privacy: dict[str, Any]
    start: dict[str, Any] | None = None  # federated rounds: the adapter's tensors before training


def fingerprint(rnd, i: Inputs, sel: Selection) -> dict[str, Any]:
    """What a checkpoint (and a DP ledger entry) belongs to: the same inputs resume the same round."""
    return {"spec_sha256": rnd.opened.digest, "train_sha256": sel.digest, "model_sha256": i.model_id,
            "parent": i.parent.package_id if i.parent else None}


def _with_adapter(spec, i: Inputs):
    """``i.model`` with a trainable adapter "default": the parent's weights, or a fresh LoRA."""
    import torch
    from peft import PeftModel

    warm = i.parent is not None and spec.training.init == "last-release"
    if warm:
        want = {"r": spec.lora.r, "lora_alpha": spec.lora.alpha}
        have = {k: i.parent.config.get(k) for k in want}
        if want != have or _modules(spec.lora.target_modules) != _modules(i.parent.config.get("target_modules")):
            raise InputError(f"training.init \"last-release\": the spec's lora settings {want} differ from the "
                             f"production adapter's {have} (or its target_modules)",
                             hint="match the production adapter's lora settings, or set training.init to \"base\"")
    if not isinstance(i.model, PeftModel):
        return add_lora(i.model, spec.lora, spec.training.seed), False
    check_target_modules(i.model.get_base_model(), spec.lora.target_modules)
    torch.manual_seed(spec.training.seed)
    i.model.add_adapter("default", lora_config(spec.lora))
    if warm:
        adapters.load_weights(i.model, i.parent.weights, "default")
    i.model.set_adapter("default")
    return i.model, warm


def _modules(value) -> Any:
    return sorted(value) if isinstance(value, (list, tuple, set)) else value


def _federated(spec, model, warm: bool) -> dict[str, Any] | None:
    """A federated site's start: a fresh LoRA drawn device-independently (every site and the
    aggregator draw the same one); A frozen under ffa. Returns the start's tensors."""
    fed = spec.federation
    if fed is None:
        return None
    if not warm:
        start.fresh_init(model, spec.training.seed)
    if fed.method == "ffa":
        start.freeze_a(model)
    return start.lora_state(model)


def _shown(progress, *, private: bool):
    """The training steps for the progress display; under DP without the losses and token counts."""
    if not progress:
        return None
    if private:
        return lambda d, t, _loss, _tokens: progress("training", d, t, math.nan, -1)
    return lambda d, t, loss, tokens: progress("training", d, t, loss, tokens)


@dataclass
class Start:
    """The model with its trainable adapter in the round's start state, before any step."""

    model: Any
    warm: bool
    state: dict[str, Any] | None  # federated rounds: the adapter's tensors before training


def begin(spec, i: Inputs) -> Start:
    """``i.model`` with the spec's trainable adapter "default" in its start state."""
    model, warm = _with_adapter(spec, i)
    return Start(model, warm, _federated(spec, model, warm))


def probe(spec, i: Inputs, examples: list, start: Start):
    """The DP plan's probe: the gradient scale of the start on ``examples``, the round's eval
    examples, which a DP round requires to be public (runners/learn/probe.py)."""
    data = tokenize(i.tok, examples, spec.training.max_seq_len)
    return lambda clip: gradients.measure(start.model, i.tok, data, clip=clip, rows=spec.training.batch_size,
                                          learning_rate=spec.training.learning_rate, device=i.device.name,
                                          seed=spec.training.seed, objective=losses.resolve(spec.training.loss))


def _resumption(rnd) -> dict[str, Any]:
    """Evidence of where training started: "resumed from step k of checkpoint <digest>", or why a
    checkpoint found in the state folder was not resumed."""
    ck = rnd.checkpoints
    if ck.ignored:
        rnd.note(ck.ignored, warning=True)
        return {"checkpoint_ignored": ck.ignored}
    if ck.resumed:
        return {"resumed": {"from_step": ck.resumed["step"], "checkpoint_sha256": ck.resumed["checkpoint_sha256"]}}
    return {}


def update(rnd, i: Inputs, sel: Selection, begun: Start) -> Update:
    spec = rnd.spec
    model, warm, start_state = begun.model, begun.warm, begun.state
    dp_run, limit = rnd.mode.trainer(i.device.name)
    progress, fp = rnd.progress, fingerprint(rnd, i, sel)
    if rnd.world is not None:  # torchrun: the other ranks train their share of the same job
        ranks.lead(rnd.world, model, sel.train_data, spec, dp_run, limit, fp, rnd.checkpoints)
        rnd.led.append(True)
    result = train(model, i.tok, sel.train_data, spec.training, i.device.name, rnd.checkpoints, fp,
                   stop=rnd.stop, dp=dp_run, limit=limit, world=rnd.world,
                   progress=_shown(progress, private=dp_run is not None),
                   on_resume=(lambda done, total: progress("resumed", done, total, math.nan, -1)) if progress else None)
    record = {**result.metrics(), "train_examples": len(sel.train_data), "train_sha256": rnd.mode.private(sel.digest),
              "lora": spec.lora.model_dump(mode="json"), "planned_steps": total_steps(spec.training, len(sel.train_data)),
              "learning_rate": spec.training.learning_rate, "batch_size": spec.training.batch_size,
              "device": i.device.name, "dtype": i.device.dtype_name, "init": "last-release" if warm else "base",
              "loss": losses.resolve(spec.training.loss).describe(),
              "processes": rnd.world.size if rnd.world is not None else 1}
    record.update(_resumption(rnd))
    record = rnd.mode.training_record(result, record)
    if rnd.spec.federation is not None and "withheld_under_dp" not in record:
        # An update's evidence travels in cleartext: the per-step losses and token counts of the
        # site's private data stay in the site's own report (docs/federated.md).
        record = {**{k: v for k, v in record.items() if k not in result.PRIVATE},
                  "withheld_from_update": list(result.PRIVATE)}
    rnd.record("tgflow.training", record)
    return Update(model, result, warm, rnd.mode.finish(rnd, result), start_state)
