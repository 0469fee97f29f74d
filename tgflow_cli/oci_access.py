"""The flags of every command that talks to an OCI registry, and the Access they make.

``--plain-http`` (or TGFLOW_REGISTRY_PLAIN_HTTP=1 for commands without the flag, such as
`peft run` registering into an oci:// registry), ``--ca-file``, and ``--username`` with the
password from ``--registry-password-file`` or TGFLOW_REGISTRY_PASSWORD: never a flag value."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from .common import STATE

PlainHttp = typer.Option(False, "--plain-http", help="Talk to the registry over plain HTTP (a local or test registry); never the default.")
CaFile = typer.Option(None, "--ca-file", help="PEM CA certificate(s) the registry's TLS certificate must chain to.", dir_okay=False)
Username = typer.Option(None, "--username", help="Registry user (else TGFLOW_REGISTRY_USERNAME, then the Docker config). The password comes from --registry-password-file or TGFLOW_REGISTRY_PASSWORD.")
PasswordFile = typer.Option(None, "--registry-password-file", help="File holding the registry password on one line (with --username; else TGFLOW_REGISTRY_PASSWORD).", dir_okay=False)

def use(plain_http: bool = False, ca_file: Optional[Path] = None, username: Optional[str] = None,
        password_file: Optional[Path] = None) -> None:
    """Record this command's registry flags (read by ``access()`` when a registry is opened)."""
    STATE.registry = dict(plain_http=plain_http, ca_file=ca_file, username=username, password_file=password_file)


def access():
    from runners.oci.client import Access

    flags = STATE.registry
    return Access.from_env(plain_http=bool(flags.get("plain_http")), ca_file=flags.get("ca_file"),
                           username=flags.get("username"), password_file=flags.get("password_file"))
