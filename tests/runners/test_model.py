"""Base model resolution: local folders and the offline cache, never the network."""

from __future__ import annotations

import shutil

import pytest

from runners.learn.model import model_digest, resolve_model
from tgsp.errors import InputError, NotFoundError


def test_local_folder_resolves(tiny_model, tmp_path):
    assert resolve_model(str(tiny_model), tmp_path) == tiny_model


def test_id_in_the_offline_cache_resolves_without_network(tiny_model, tmp_path, monkeypatch):
    """Lay the model out exactly as huggingface_hub's cache does, then resolve by id."""
    cache = tmp_path / "hub"
    repo = cache / "models--acme--tiny-llama"
    snap = repo / "snapshots" / ("0" * 40)
    snap.mkdir(parents=True)
    for f in tiny_model.iterdir():
        shutil.copy(f, snap / f.name)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("0" * 40)
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    import huggingface_hub.constants as c

    monkeypatch.setattr(c, "HF_HUB_CACHE", str(cache))
    path = resolve_model("acme/tiny-llama", tmp_path)
    assert (path / "config.json").exists() and "model.safetensors" in model_digest(path)


def test_id_not_in_cache_is_a_clear_error(tmp_path, monkeypatch):
    import huggingface_hub.constants as c

    monkeypatch.setattr(c, "HF_HUB_CACHE", str(tmp_path / "empty"))
    with pytest.raises(NotFoundError, match="never downloads"):
        resolve_model("acme/not-here", tmp_path)


def test_pickled_weights_are_refused(tmp_path):
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "config.json").write_text("{}")
    (tmp_path / "m" / "pytorch_model.bin").write_bytes(b"\x80\x04pickle")
    with pytest.raises(InputError, match="pickled .bin weights are refused"):
        model_digest(tmp_path / "m")


def test_model_fetch_writes_a_verified_offline_folder(tiny_model, tmp_path, monkeypatch, capsys):
    """tgflow model fetch, from a pre-filled cache (HF_HUB_OFFLINE=1; a connected machine
    would download into the cache first): weights, configs and tokenizer only, with
    digests that peft run checks (issue 16)."""
    import json

    from runners.learn.fetch import MANIFEST
    from tgflow_cli.main import main

    cache = tmp_path / "hub"
    snap = cache / "models--acme--tiny-llama" / "snapshots" / ("a" * 40)
    snap.mkdir(parents=True)
    for f in tiny_model.iterdir():
        shutil.copy(f, snap / f.name)
    (snap / "pytorch_model.bin").write_bytes(b"pickle")  # never copied
    (snap / "modeling_evil.py").write_text("import os")  # remote code: never copied
    (cache / "models--acme--tiny-llama" / "refs").mkdir()
    (cache / "models--acme--tiny-llama" / "refs" / "main").write_text("a" * 40)
    import huggingface_hub.constants as c

    monkeypatch.setattr(c, "HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    out = tmp_path / "models" / "tiny"
    assert main(["model", "fetch", "acme/tiny-llama", "-o", str(out), "--json"]) == 0
    record = json.loads(capsys.readouterr().out)
    assert record["snapshot"] == "a" * 40 and "model.safetensors" in record["files"]
    assert not (out / "pytorch_model.bin").exists() and not (out / "modeling_evil.py").exists()
    assert json.loads((out / MANIFEST).read_text())["files"] == record["files"]
    assert resolve_model(str(out), tmp_path) == out and "model.safetensors" in model_digest(out)
    (out / "config.json").write_text((out / "config.json").read_text() + " ")
    with pytest.raises(InputError, match="config.json does not match the digest recorded"):
        model_digest(out)
    assert main(["model", "fetch", "acme/tiny-llama", "-o", str(out)]) == 2  # never over an existing folder
    assert main(["model", "fetch", "acme/not-here", "-o", str(tmp_path / "x")]) == 2


def test_an_adapter_in_memory_is_what_save_pretrained_writes(tiny_model, tmp_path):
    """The released adapter is packed from memory (never written in the clear): the same
    files peft's own save_pretrained writes, with our portable base reference and card."""
    import json

    import torch
    from safetensors.torch import load, load_file

    from runners.learn import adapters, model as model_mod
    from runners.learn.train import add_lora
    from runners.spec import LoraSpec

    _, model = model_mod.load(tiny_model, model_mod.pick_device("fp32"))
    model = add_lora(model, LoraSpec(r=4, alpha=8, target_modules=["q_proj", "v_proj"]), seed=0)
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.normal_()
    files = adapters.in_memory(model, base_ref="examples/tiny-base", card="# card\n")
    model.save_pretrained(tmp_path, safe_serialization=True, selected_adapters=["default"])
    ours, theirs = load(files[adapters.WEIGHTS]), load_file(str(tmp_path / adapters.WEIGHTS))
    assert ours.keys() == theirs.keys() and all(torch.equal(ours[k], theirs[k]) for k in ours)
    want = json.loads((tmp_path / adapters.CONFIG).read_text())
    got = json.loads(files[adapters.CONFIG])
    want.update(base_model_name_or_path=adapters.portable_ref("examples/tiny-base"))
    want.pop("revision", None)
    want["target_modules"] = sorted(want["target_modules"])
    assert got == want
    assert files[adapters.CARD] == b"# card\n"
