"""tgflow version, tgflow completion: about the tool itself."""

from __future__ import annotations

import platform
import sys
from enum import Enum
from importlib import metadata

import typer

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
        return emit_json(info)
    say(f"tgflow {info['tgflow']} (formats: {', '.join(info['formats'])}; Python {info['python']})")
    for group in ("format_libraries", "cli_libraries", "optional"):
        say("  " + ", ".join(f"{k} {v or 'missing'}" for k, v in info[group].items()))


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
