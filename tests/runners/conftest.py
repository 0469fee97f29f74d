"""Fixtures for peft run: a tiny Llama built from a config, feeds, keys, specs."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from tests.helpers import PASS

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    """A randomly initialised 2-layer Llama (built from a config) with the shipped tokenizer."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    out = tmp_path_factory.mktemp("tiny-llama")
    tok = AutoTokenizer.from_pretrained(EXAMPLES / "tiny-base")
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
                      bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    LlamaForCausalLM(cfg).save_pretrained(out, safe_serialization=True)
    tok.save_pretrained(out)
    return out


@pytest.fixture
def workspace(tmp_path, monkeypatch, tiny_model):
    """A keyring with a signing and a recipient key, copies of the feeds, and a spec writer."""
    from tgflow_cli.main import main

    monkeypatch.setenv("TGFLOW_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("TGFLOW_PASSPHRASE", PASS)
    assert main(["key", "generate", "release"]) == 0
    assert main(["key", "generate", "operator", "--type", "recipient"]) == 0
    shutil.copytree(EXAMPLES / "feeds", tmp_path / "feeds")
    (tmp_path / "out").mkdir()

    def write_spec(name: str = "spec.json", **over) -> Path:
        spec = {
            "route_key": "support",
            "base_model_ref": str(tiny_model),
            "feed": {"type": "jsonl", "uri": "feeds/support-tickets.jsonl", "max_examples": 64},
            "reference": {"type": "jsonl", "uri": "feeds/reference.jsonl", "max_examples": 16},
            "policy": {"novelty_threshold": 0.0, "min_novel_examples": 8, "forgetting_budget": 10.0, "eval_fraction": 0.25},
            "lora": {"r": 4, "alpha": 8, "target_modules": ["q_proj", "v_proj"]},
            "training": {"steps": 6, "batch_size": 8, "learning_rate": 0.01, "seed": 3, "max_seq_len": 64,
                         "checkpoint_every": 2},
            "output": {"path": "out/adapter.tgsp", "signing_key": "release", "recipients": ["operator"]},
        }
        for key, value in over.items():
            section, _, field = key.partition("__")
            if field:
                spec.setdefault(section, {})[field] = value
            else:
                spec[section] = value
        path = tmp_path / name
        path.write_text(json.dumps(spec))
        return path

    class W:
        pass

    w = W()
    w.root, w.spec = tmp_path, write_spec
    w.state = tmp_path / "out" / ".tgflow-state" / "support"
    return w
