"""tgflow route materialize: the production adapter as the PEFT folder a serving engine loads."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path
from typing import List, Optional

import typer

from tgsp.errors import HookFailed, InputError, PackageError, RegistryError

from . import oci_access
from .common import STATE, emit_json, keyring, passphrase
from .errors import UNCHANGED
from .oci_access import CaFile, PasswordFile, PlainHttp, Username
from .resolve_run import open_registry, trusted_policy
from .term import say, warn

HOOK_TIMEOUT = 300


def materialize(
    route: str = typer.Argument(..., help="The route key."),
    to: Path = typer.Option(..., "--to", metavar="DIR", help="The folder the serving engine reads (a memory-backed emptyDir in Kubernetes).", file_okay=False),
    alias: str = typer.Option("production", "--alias", help="The alias to serve."),
    identity: Optional[List[str]] = typer.Option(None, "--identity", help="Recipient key that decrypts the adapter: a name in the keyring, or a key file (mode 600). Repeatable."),
    trusted: Optional[List[str]] = typer.Option(None, "--trusted", help="Trust only these keys (names or public key files). Repeatable."),
    watch: Optional[int] = typer.Option(None, "--watch", metavar="SECONDS", min=1, max=86400, help="Keep running: check every SECONDS and follow promotions and rollbacks (a sidecar)."),
    on_change: Optional[str] = typer.Option(None, "--on-change", metavar="COMMAND", help="Run this shell command after each change, with TGFLOW_ADAPTER_NAME, TGFLOW_ADAPTER_PATH, TGFLOW_PREVIOUS_NAME, TGFLOW_ROUTE and TGFLOW_VERSION set."),
    registry: Optional[str] = typer.Option(None, "--registry", metavar="DIR|oci://HOST/REPO", help="The registry (default: [route] registry in config.toml)."),
    plain_http: bool = PlainHttp, ca_file: Optional[Path] = CaFile, username: Optional[str] = Username,
    registry_password_file: Optional[Path] = PasswordFile,
    passphrase_file: Optional[Path] = typer.Option(None, "--passphrase-file", help="Passphrase for the identity key (else TGFLOW_PASSPHRASE, TGFLOW_PASSPHRASE_FILE, or a prompt).", dir_okay=False),
    json_out: bool = typer.Option(False, "--json", help="Print machine-readable JSON (one line per change with --watch)."),
) -> None:
    """Resolve the alias, verify the index and the package, decrypt the adapter into a private
    temporary folder inside DIR and rename it to DIR/<route>-v<version>/ (the PEFT folder vLLM, TGI, NIM and PeftModel load); then move
    the link DIR/<route> to it, keeping the previous version. Exit 0 changed, 20 unchanged.

    Example: tgflow route materialize support --registry demo-out/registry --to served --identity operator
    """
    oci_access.use(plain_http, ca_file, username, registry_password_file)
    if on_change is not None and (not on_change.strip() or "\n" in on_change):
        raise InputError("--on-change takes one shell command line")
    pp = passphrase(passphrase_file, key=", ".join(identity or []) or None)
    idents = [k for name in identity or [] for k in keyring().identities(name, pp)]
    if not idents:
        raise InputError("no identity to decrypt the adapter with", hint="pass --identity KEY (a recipient of the route's packages)")
    reg = open_registry(registry, None, trusted_policy(trusted))
    if watch is None:
        result = _once(reg, route, alias, idents, to, json_out)
        if result["changed"] and on_change:
            _hook(on_change, result)
        if not result["changed"]:
            STATE.reported = True
            raise typer.Exit(UNCHANGED)
        return
    _watch(reg, route, alias, idents, to, json_out, on_change, watch)


def _watch(reg, route, alias, idents, to: Path, json_out: bool, on_change: Optional[str], seconds: int) -> None:
    """Until SIGTERM (143): follow the alias; a refused index or an unreachable registry keeps
    what is served; a hook that failed is run again on the next tick, until it succeeds."""
    pending = None
    while True:
        try:
            result = _once(reg, route, alias, idents, to, json_out, quiet=True)
            pending = result if result["changed"] else pending
            if pending and on_change:
                _hook(on_change, pending)
            pending = None
        except HookFailed as exc:
            warn(f"warning: {route}: {str(exc).splitlines()[0]}; it runs again at the next check")
        except (RegistryError, PackageError) as exc:
            warn(f"warning: {route}: {str(exc).splitlines()[0]}; still serving what was there")
        time.sleep(seconds)


def _once(reg, route, alias, idents, to: Path, json_out: bool, quiet: bool = False) -> dict:
    """One materialize; prints the change (with ``quiet``, as a sidecar, nothing when unchanged)."""
    from runners.state.materialize import materialize as run

    result = run(reg, route, alias, reg.policy, idents, to)
    if quiet and not result["changed"]:
        return result
    if json_out:
        emit_json(result)
    elif result["changed"]:
        say(f"{route} {alias}: version {result['version']} -> {result['path']}"
            + (f" (previous: {result['previous']})" if result["previous"] else ""))
    else:
        say(f"{route} {alias}: version {result['version']} (unchanged)")
    return result


def _hook(command: str, result: dict) -> None:
    env = {**os.environ, "TGFLOW_ADAPTER_NAME": result["name"], "TGFLOW_ADAPTER_PATH": result["path"],
           "TGFLOW_PREVIOUS_NAME": result["previous"] or "", "TGFLOW_ROUTE": result["route"],
           "TGFLOW_VERSION": str(result["version"])}
    try:
        code = subprocess.run(["/bin/sh", "-c", command], env=env, timeout=HOOK_TIMEOUT, check=False).returncode
    except subprocess.TimeoutExpired:
        code = None
    if code != 0:
        raise HookFailed(f"the --on-change command {'timed out' if code is None else f'exited {code}'}; "
                         f"{result['name']} is written and linked, but the engine may not have loaded it",
                         hint="check the command; the serving engine may still serve the previous version")
