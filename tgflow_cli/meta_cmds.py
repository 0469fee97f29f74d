"""tgflow version, tgflow completion: about the tool itself."""

from __future__ import annotations

import platform
import sys
from enum import Enum
from importlib import metadata
from pathlib import Path

import typer

from tgsp.errors import TgflowError

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
        return emit_json({**info, "doctor": _doctor(self_test=False)})
    say(f"tgflow {info['tgflow']} (formats: {', '.join(info['formats'])}; Python {info['python']})")
    for group in ("format_libraries", "cli_libraries", "optional"):
        say("  " + ", ".join(f"{k} {v or 'missing'}" for k, v in info[group].items()))


def _gpu(self_test: bool = True) -> dict:
    if not self_test:
        return {"available": None, "detail": "not checked: run tgflow doctor"}
    if extras.check(extras.named("train"))["working"]:
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
    try:
        return {"path": str(home), "exists": True, "keys": len(common.keyring().list())}
    except TgflowError as exc:  # a damaged key file: report it, as doctor reports a broken extra
        return {"path": str(home), "exists": True, "keys": None, "error": str(exc)[:300]}


def _config(strict: bool) -> dict:
    try:
        cfg = common.config()
    except TgflowError as exc:
        if strict:  # doctor: a broken config.toml exits 2, naming it
            raise
        return {"path": None, "settings": None, "error": str(exc)[:300]}
    return {"path": str(cfg.path) if cfg.path else None, "settings": len(cfg.values)}


def _registries() -> dict:
    """OCI registries (push, pull, oci:// route registries): the client, where credentials would
    come from (never the credentials), and the package cache."""
    from importlib.metadata import PackageNotFoundError, version

    from runners.oci.auth import config_files
    from runners.state.backends import cache_dir

    try:
        client = f"httpx {version('httpx')}"
    except PackageNotFoundError:
        client = None
    found = [str(p) for p in config_files() if p.is_file()]
    return {"client": client, "credentials_from": found, "cache": str(cache_dir())}


def _doctor(self_test: bool = True) -> dict:
    """With ``self_test`` (doctor), each extra is imported and tried; without (version --json, which
    must stay fast), only whether its modules are there."""
    features = [{"extra": e.name, "feature": e.feature, **(extras.check(e) if self_test else extras.present(e))}
                for e in extras.EXTRAS]
    return {"features": features, "gpu": _gpu(self_test), "keyring": _keyring(), "config": _config(self_test),
            "registries": _registries()}


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
    state = (f"BROKEN: {ring['error']}" if ring.get("error") else f"{ring['keys']} keys" if ring["exists"]
             else "does not exist yet (tgflow key generate creates it)")
    say(f"keyring  {ring['path']}: {state}")
    say("config   " + (f"{cfg['path']} ({cfg['settings']} settings)" if cfg["path"] else "none (defaults)"))
    reg = report["registries"]
    say(f"oci      {reg['client'] or 'MISSING httpx (pip install httpx)'}; credentials from "
        f"{', '.join(reg['credentials_from']) or 'no Docker config (anonymous, or --username)'}; cache {reg['cache']}")


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
