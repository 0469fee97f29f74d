"""tgflow route materialize: promote, materialize, load with peft; roll back and it follows;
an interruption leaves the old version served and nothing decrypted outside the folder."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import tgsp
from tests.helpers import cli
from tests.runners.conftest import tiny_model  # noqa: F401  (fixture)

ROOT = Path(__file__).resolve().parents[2]


def _peft_adapter(base: Path, out: Path, seed: int) -> dict:
    """A real PEFT LoRA folder on the tiny model, with non-zero B weights; its LoRA tensors."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(base),
                           LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"]))
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_()
    model.save_pretrained(out)
    cfg = json.loads((out / "adapter_config.json").read_text())
    cfg["base_model_name_or_path"] = "tiny-base"  # never a local path in a package
    (out / "adapter_config.json").write_text(json.dumps(cfg))
    return {k: v.clone() for k, v in model.state_dict().items() if "lora_" in k}


@pytest.fixture
def served(world, tiny_model, tmp_path, capsys):  # noqa: F811
    """Two real adapter versions registered in a folder registry; v1 promoted."""
    weights = {}
    for v in (1, 2):
        weights[v] = _peft_adapter(tiny_model, tmp_path / f"peft-{v}", seed=v)
        pkg = world.package(v, src=tmp_path / f"peft-{v}")
        assert cli_ok("route", "register", pkg, "--registry", tmp_path / "registry", "--signing-key", "release")
    assert cli_ok("route", "promote", "support", "1", "--registry", tmp_path / "registry", "--signing-key", "release")
    capsys.readouterr()
    return weights


def cli_ok(*argv) -> bool:
    """The real CLI in-process; what it prints is left for the next ``cli`` to drop."""
    from tgflow_cli.main import main

    return main([str(a) for a in argv]) == 0


def _drain(capsys) -> None:
    capsys.readouterr()


def _materialize(capsys, tmp_path, *extra):
    _drain(capsys)
    return cli(capsys, "route", "materialize", "support", "--registry", tmp_path / "registry", "--to",
               tmp_path / "serve", "--identity", "operator", *extra)


def _loaded(base: Path, folder: Path) -> dict:
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base), folder)
    return {k.replace(".default", ""): v for k, v in model.state_dict().items() if "lora_" in k}


def _same(a: dict, b: dict) -> bool:
    import torch

    a = {k.replace(".default", ""): v for k, v in a.items()}
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_promote_materialize_load_roll_back_and_follow(served, world, tiny_model, capsys, tmp_path):  # noqa: F811
    code, out, err = _materialize(capsys, tmp_path, "--json")
    assert code == 0, err
    got = json.loads(out)
    serve = tmp_path / "serve"
    assert got["changed"] and got["version"] == 1 and os.readlink(serve / "support") == "support-v1"
    assert _same(served[1], _loaded(tiny_model, serve / "support"))
    assert _materialize(capsys, tmp_path)[0] == 20  # unchanged
    assert cli_ok("route", "promote", "support", "2", "--registry", tmp_path / "registry", "--signing-key", "release")
    marker = tmp_path / "hook.txt"
    code, out, err = _materialize(capsys, tmp_path, "--on-change",
                                  f'echo "$TGFLOW_ADAPTER_NAME $TGFLOW_PREVIOUS_NAME $TGFLOW_VERSION" > {marker}')
    assert code == 0, err
    assert marker.read_text().split() == ["support-v2", "support-v1", "2"]
    assert os.readlink(serve / "support") == "support-v2" and (serve / "support-v1").is_dir()  # kept for rollback
    assert _same(served[2], _loaded(tiny_model, serve / "support"))
    assert cli_ok("route", "rollback", "support", "--registry", tmp_path / "registry", "--signing-key", "release")
    code, out, err = _materialize(capsys, tmp_path, "--json")
    assert code == 0 and json.loads(out)["previous"] == "support-v2", err
    assert os.readlink(serve / "support") == "support-v1"
    assert _same(served[1], _loaded(tiny_model, serve / "support"))


def test_a_kept_folder_that_was_altered_is_rewritten(served, world, tiny_model, capsys, tmp_path):  # noqa: F811
    assert _materialize(capsys, tmp_path)[0] == 0
    assert cli_ok("route", "promote", "support", "2", "--registry", tmp_path / "registry", "--signing-key", "release")
    assert _materialize(capsys, tmp_path)[0] == 0
    weights = tmp_path / "serve" / "support-v1" / "adapter_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-8] + b"\0" * 8)  # someone edits the kept v1
    assert cli_ok("route", "rollback", "support", "--registry", tmp_path / "registry", "--signing-key", "release")
    assert _materialize(capsys, tmp_path)[0] == 0
    assert _same(served[1], _loaded(tiny_model, tmp_path / "serve" / "support"))


def test_an_interrupted_write_leaves_the_old_version_and_no_plaintext(served, world, capsys, tmp_path, monkeypatch):
    from runners.state import materialize as M
    from tgflow_cli.signals import Terminated

    assert _materialize(capsys, tmp_path)[0] == 0
    assert cli_ok("route", "promote", "support", "2", "--registry", tmp_path / "registry", "--signing-key", "release")

    def sigterm_at_rename(src, dst):  # SIGTERM arrives as the new folder is about to be named
        raise Terminated(signal.SIGTERM)

    monkeypatch.setattr(M.os, "rename", sigterm_at_rename)
    code, out, err = _materialize(capsys, tmp_path)
    assert code == 143
    serve = tmp_path / "serve"
    assert os.readlink(serve / "support") == "support-v1"
    assert sorted(p.name for p in serve.iterdir()) == [".tgflow-consumer.json", "support", "support-v1"]
    v2 = (tmp_path / "peft-2" / "adapter_model.safetensors").read_bytes()
    for p in tmp_path.rglob("*"):  # the v2 plaintext exists only in the test's own source folder
        if p.is_file() and not p.is_symlink() and "peft-2" not in p.parts:
            assert v2[-4096:] not in p.read_bytes(), p


def test_watch_follows_a_promotion_and_stops_on_sigterm(served, world, tmp_path):
    marker = tmp_path / "loaded.txt"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-m", "tgflow_cli", "route", "materialize", "support", "--registry",
                             str(tmp_path / "registry"), "--to", str(tmp_path / "serve"), "--identity", "operator",
                             "--watch", "1", "--on-change", f'echo "$TGFLOW_ADAPTER_NAME" >> {marker}'],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        _wait(lambda: marker.is_file() and marker.read_text().split() == ["support-v1"])
        assert cli_ok("route", "promote", "support", "2", "--registry", tmp_path / "registry", "--signing-key", "release")
        _wait(lambda: marker.read_text().split() == ["support-v1", "support-v2"])
        assert os.readlink(tmp_path / "serve" / "support") == "support-v2"
    finally:
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=60)
    assert proc.returncode == 143, err


def _wait(cond, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(0.2)
    raise AssertionError("timed out")


def test_materialize_from_an_oci_registry(registry, world, tiny_model, capsys, tmp_path):  # noqa: F811
    weights = _peft_adapter(tiny_model, tmp_path / "peft-1", seed=1)
    r = ["--registry", f"oci://{registry.host}/routes", "--plain-http"]
    assert cli(capsys, "route", "register", world.package(1, src=tmp_path / "peft-1"), *r, "--signing-key", "release",
               "--alias", "production")[0] == 0
    code, out, err = cli(capsys, "route", "materialize", "support", *r, "--to", tmp_path / "serve", "--identity",
                         "operator")
    assert code == 0, err
    assert _same(weights, _loaded(tiny_model, tmp_path / "serve" / "support"))
    assert tgsp  # the package library is what decrypted it (imported for the fixture's packages)


def test_a_link_where_a_version_folder_goes_is_refused(served, world, capsys, tmp_path):
    assert _materialize(capsys, tmp_path)[0] == 0
    assert cli_ok("route", "promote", "support", "2", "--registry", tmp_path / "registry", "--signing-key", "release")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (tmp_path / "serve" / "support-v2").symlink_to(elsewhere)
    code, out, err = _materialize(capsys, tmp_path)
    assert code == 2 and "is a link or a file where tgflow writes" in err
    assert list(elsewhere.iterdir()) == [] and os.readlink(tmp_path / "serve" / "support") == "support-v1"
