"""tgflow version, tgflow completion: about the tool itself."""

from __future__ import annotations

import platform
import sys
from enum import Enum
from importlib import metadata
from pathlib import Path

import typer

from . import common, extras
from .common import emit_json
from .term import say

# The libraries the package format's bytes depend on, and the CLI's own.
FORMAT_LIBRARIES = ("cryptography", "pqcrypto", "rfc8785")
CLI_LIBRARIES = ("typer", "rich", "pydantic")
OPTIONAL = ("python-pkcs11", "torch", "transformers", "peft", "safetensors", "opacus")


def _version_of(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def version(json_out: bool = typer.Option(False, "--json", help="Print machine-readable JSON.")) -> None:
    """Print tgflow's version, the package formats it reads and writes, and the
    versions of the libraries the format depends on.

    Example: tgflow version --json
    """
    from tgsp import manifest

    info = {"tgflow": _version_of("tgflow") or "source", "formats": [manifest.FORMAT],
            "python": platform.python_version(),
            "format_libraries": {d: _version_of(d) for d in FORMAT_LIBRARIES},
            "cli_libraries": {d: _version_of(d) for d in CLI_LIBRARIES},
            "optional": {d: v for d in OPTIONAL if (v := _version_of(d))}}
    if json_out:
        return emit_json({**info, "doctor": _doctor()})
    say(f"tgflow {info['tgflow']} (formats: {', '.join(info['formats'])}; Python {info['python']})")
    for group in ("format_libraries", "cli_libraries", "optional"):
        say("  " + ", ".join(f"{k} {v or 'missing'}" for k, v in info[group].items()))


def _gpu() -> dict:
    if extras.check(extras.for_module("torch"))["working"]:
        import torch

        if torch.cuda.is_available():
            return {"available": True, "count": torch.cuda.device_count(), "name": torch.cuda.get_device_name(0)}
        return {"available": False, "count": 0, "name": None}
    return {"available": False, "count": 0, "name": None, "detail": "torch is not installed"}


def _keyring() -> dict:
    from tgsp.keyring import default_home

    home = Path(common.STATE.home) if common.STATE.home else default_home()
    if not home.is_dir():
        return {"path": str(home), "exists": False, "keys": 0}
    return {"path": str(home), "exists": True, "keys": len(common.keyring().list())}


def _config() -> dict:
    cfg = common.config()  # a broken config.toml raises here: doctor then exits 2 naming it
    return {"path": str(cfg.path) if cfg.path else None, "settings": len(cfg.values)}


def _doctor() -> dict:
    return {"features": [{"extra": e.name, "feature": e.feature, **extras.check(e)} for e in extras.EXTRAS],
            "gpu": _gpu(), "keyring": _keyring(), "config": _config()}


def doctor(json_out: bool = typer.Option(False, "--json", help="Print machine-readable JSON.")) -> None:
    """Check this installation: each optional feature, the extra it needs, whether that
    extra is installed and passes a tiny self-test; the GPU; the keyring and config.toml
    tgflow would use. Exits 0 even when optional parts are missing; 2 if config.toml is broken.

    Example: tgflow doctor --json
    """
    report = _doctor()
    if json_out:
        return emit_json(report)
    for f in report["features"]:
        mark = "ok" if f["working"] else ("broken" if f["installed"] else "missing")
        say(f"{mark:8} [{f['extra']}] {f['feature']}: {f['detail']}")
        if f["fix"]:
            say(f"         fix: {f['fix']}")
    gpu, ring, cfg = report["gpu"], report["keyring"], report["config"]
    say("gpu      " + (f"{gpu['name']} (x{gpu['count']})" if gpu["available"]
                       else "none (training runs on the CPU)"))
    say(f"keyring  {ring['path']}: "
        + (f"{ring['keys']} keys" if ring["exists"] else "does not exist yet (tgflow key generate creates it)"))
    say("config   " + (f"{cfg['path']} ({cfg['settings']} settings)" if cfg["path"] else "none (defaults)"))


class Shell(str, Enum):
    bash = "bash"
    zsh = "zsh"
    fish = "fish"


def completion(shell: Shell = typer.Argument(..., help="bash, zsh or fish.")) -> None:
    """Print a shell completion script.

    Example: tgflow completion bash > ~/.local/share/bash-completion/completions/tgflow
    (zsh: tgflow completion zsh > "${fpath[1]}/_tgflow"; fish: tgflow completion fish > ~/.config/fish/completions/tgflow.fish)
    """
    from typer._completion_classes import completion_init
    from typer._completion_shared import get_completion_script

    completion_init()
    sys.stdout.write(get_completion_script(prog_name="tgflow", complete_var="_TGFLOW_COMPLETE",
                                           shell=shell.value).rstrip("\n") + "\n")
