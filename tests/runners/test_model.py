"""Base model resolution: local folders and the offline cache, never the network."""

from __future__ import annotations

import shutil

import pytest

from runners.model import model_digest, resolve_model
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
