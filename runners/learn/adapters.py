"""Adapters in and out of packages: read a released adapter into memory and
attach it to a model (never writing a decrypted byte to disk), and save a
new one as a portable PEFT folder with a model card made from the evidence.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import tgsp
from tgsp.errors import InputError
from tgsp.unpack import read_payload

CONFIG, WEIGHTS, CARD = "adapter_config.json", "adapter_model.safetensors", "README.md"


@dataclass(frozen=True)
class Release:
    """A verified, decrypted adapter package, held in memory."""

    package_id: str
    route: str
    version: int
    config: dict[str, Any]
    weights: bytes
    evidence: dict[str, Any]  # event type -> data (the last of each type)

    @property
    def base_model(self) -> dict[str, Any]:
        return (self.evidence.get("tgflow.inputs") or {}).get("base_model") or {}


def read_release(path: Path, policy, identities: list) -> Release:
    report, files = read_payload(path, policy, identities=identities)
    m = report.manifest
    if m.get("kind") != "adapter" or CONFIG not in files or WEIGHTS not in files:
        raise InputError(f"{path} is not an adapter package (needs {CONFIG} and {WEIGHTS})")
    try:
        config = json.loads(files[CONFIG])
        if not isinstance(config, dict) or config.get("peft_type") != "LORA":
            raise ValueError
    except ValueError:
        raise InputError(f"{path}: {CONFIG} is not a LoRA adapter config") from None
    with tgsp.open_package(path) as pkg:
        events = {e["type"]: e["data"] for e in pkg.evidence}
    return Release(report.package_id, m["route"], m["version"], config, files[WEIGHTS], events)


def lora_config(config: dict[str, Any], *, trainable: bool):
    from peft import LoraConfig

    names = {f.name for f in dataclasses.fields(LoraConfig)}
    kwargs = {k: v for k, v in config.items() if k in names and k not in ("inference_mode", "base_model_name_or_path")}
    return LoraConfig(**kwargs, inference_mode=not trainable)


def attach(model, release: Release, name: str, *, trainable: bool = False):
    """``model`` with ``release`` loaded as adapter ``name`` (a PeftModel; a new one if ``model`` is not)."""
    from peft import PeftModel, get_peft_model

    cfg = lora_config(release.config, trainable=trainable)
    if isinstance(model, PeftModel):
        model.add_adapter(name, cfg)
    else:
        model = get_peft_model(model, cfg, adapter_name=name)
    load_weights(model, release.weights, name)
    return model


def load_weights(model, weights: bytes, name: str) -> None:
    from peft import set_peft_model_state_dict
    from safetensors.torch import load as load_tensors

    result = set_peft_model_state_dict(model, load_tensors(weights), adapter_name=name)
    missing = [k for k in result.missing_keys if "lora_" in k and f".{name}." in k]
    if result.unexpected_keys or missing:
        raise InputError("the adapter's weights do not fit this base model "
                         f"({len(missing)} missing, {len(result.unexpected_keys)} unexpected tensors)",
                         hint="use the base model the package was trained on (see its evidence)")


def portable_ref(ref: str) -> str:
    """The base model reference for adapter_config.json: never an absolute local path."""
    p = Path(ref)
    return p.name if p.is_absolute() or ref.startswith("~") else ref


def in_memory(peft_model, *, base_ref: str, card: str) -> dict[str, bytes]:
    """The PEFT folder of adapter ``default`` as bytes, never written to disk: what
    ``save_pretrained`` writes for a LoRA (peft's own state dict and config), with a portable
    config and our model card. tests/runners/test_model.py checks it against ``save_pretrained``."""
    from peft import get_peft_model_state_dict
    from safetensors.torch import save

    state = get_peft_model_state_dict(peft_model, adapter_name="default")
    cfg = peft_model.peft_config["default"].to_dict()
    cfg = {k: sorted(v) if isinstance(v, set) else v for k, v in cfg.items()}
    cfg.update(inference_mode=True, base_model_name_or_path=portable_ref(base_ref))
    cfg.pop("revision", None)
    weights = save({k: v.detach().cpu().contiguous() for k, v in state.items()}, metadata={"format": "pt"})
    return {CONFIG: (json.dumps(cfg, indent=2, sort_keys=True) + "\n").encode(), WEIGHTS: weights,
            CARD: card.encode("utf-8")}
