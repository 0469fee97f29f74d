"""Training objectives: the per-token loss a round minimises (training.loss in the run spec).

Every objective maps (logits of shape (N, V), targets of shape (N,)) to N per-token
losses, 0 where the target is IGNORE (-100). batches.py averages them per example, so
each example's loss stays its own: under DP the per-example clipping is exact whatever
the objective, and packing never mixes examples. Evaluation always reports the plain
token cross-entropy, so losses stay comparable across objectives.

Built-ins: token_ce (default), label_smoothing (smoothing), focal (gamma). A plug-in is
an entry point in the ``tgflow.losses`` group naming a factory: ``factory(**params)``
returns such a callable. Its name, module and distribution version go into the evidence.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

from tgsp.errors import InputError

from ..spec import LOSS_PLUGINS, LOSSES, LossSpec

IGNORE = -100
DEFAULTS = {"label_smoothing": {"smoothing": 0.1}, "focal": {"gamma": 2.0}}


@dataclass(frozen=True)
class Objective:
    name: str
    token_losses: Callable[[Any, Any], Any]
    params: dict[str, Any] = field(default_factory=dict)
    source: dict[str, Any] = field(default_factory=lambda: {"kind": "built-in"})

    def describe(self) -> dict[str, Any]:
        """What the evidence records."""
        return {"name": self.name, "params": self.params, **self.source}


def token_ce(logits, targets):
    import torch.nn.functional as F

    return F.cross_entropy(logits, targets, ignore_index=IGNORE, reduction="none")


def _label_smoothing(smoothing: float):
    import torch.nn.functional as F

    return lambda logits, targets: F.cross_entropy(logits, targets, ignore_index=IGNORE, reduction="none",
                                                   label_smoothing=smoothing)


def _focal(gamma: float):
    """Focal loss (Lin et al. 2017) on the next token: (1 - p_t)^gamma x cross-entropy."""
    import torch

    def focal(logits, targets):
        ce = token_ce(logits, targets)
        return (1 - torch.exp(-ce)).pow(gamma) * ce  # ignored tokens: ce = 0, so 0

    return focal


_BUILT_IN = {"token_ce": lambda: token_ce, "label_smoothing": _label_smoothing, "focal": _focal}
assert set(_BUILT_IN) == set(LOSSES)  # the spec's table and this one name the same objectives

CE = Objective("token_ce", token_ce)


def resolve(spec: LossSpec | None) -> Objective:
    """The objective ``spec`` names, built (a plug-in is imported here, not before)."""
    if spec is None or spec.name == "token_ce":
        return CE
    params = {**DEFAULTS.get(spec.name, {}), **spec.params()}
    if spec.name in _BUILT_IN:
        return Objective(spec.name, _BUILT_IN[spec.name](**params), params)
    from importlib.metadata import entry_points

    found = [ep for ep in entry_points(group=LOSS_PLUGINS) if ep.name == spec.name]
    if not found:
        raise InputError(f"loss plug-in {spec.name!r} is not installed",
                         hint=f"install the package that provides the {LOSS_PLUGINS} entry point {spec.name!r}")
    ep = found[0]
    try:
        fn = ep.load()(**params)
    except TypeError as exc:
        raise InputError(f"loss plug-in {spec.name!r} refused its parameters: {exc}") from None
    dist = getattr(ep, "dist", None)
    source = {"kind": "plug-in", "entry_point": ep.value,
              "distribution": dist.metadata["Name"] if dist else None, "version": dist.version if dist else None}
    return Objective(spec.name, fn, params, source)
