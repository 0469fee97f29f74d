#!/usr/bin/env python3
"""Reproduce examples/demo-adapter/: a small, deterministic PEFT LoRA adapter
folder (r=4 on q_proj/v_proj) for the TGSP demo, shaped for examples/tiny-base (read from its
config.json), so peft loads it on the base it names.

    pip install safetensors numpy && python scripts/make_example_adapter.py
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from safetensors.numpy import save_file

OUT = Path(__file__).resolve().parents[1] / "examples" / "demo-adapter"


def main() -> None:
    cfg = json.loads((OUT.parent / "tiny-base" / "config.json").read_text())
    width = cfg["hidden_size"]
    head_dim = cfg.get("head_dim") or width // cfg["num_attention_heads"]
    out_dims = {"q_proj": cfg["num_attention_heads"] * head_dim, "v_proj": cfg["num_key_value_heads"] * head_dim}
    rng = np.random.default_rng(20261122)
    tensors = {}
    for layer in range(cfg["num_hidden_layers"]):
        for proj, out in out_dims.items():
            base = f"base_model.model.model.layers.{layer}.self_attn.{proj}"
            tensors[f"{base}.lora_A.weight"] = rng.normal(0, 0.02, (4, width)).astype(np.float32)
            tensors[f"{base}.lora_B.weight"] = rng.normal(0, 0.02, (out, 4)).astype(np.float32)
    OUT.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(OUT / "adapter_model.safetensors"), metadata={"format": "pt"})
    config = {
        "base_model_name_or_path": "examples/tiny-base", "peft_type": "LORA", "task_type": "CAUSAL_LM",
        "r": 4, "lora_alpha": 8, "lora_dropout": 0.0, "target_modules": ["q_proj", "v_proj"],
        "bias": "none", "fan_in_fan_out": False, "inference_mode": True,
    }
    (OUT / "adapter_config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
