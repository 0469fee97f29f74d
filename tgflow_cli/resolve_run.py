"""`tgflow route resolve` without typer or rich, and the registry it opens.

A deploying CronJob runs `route resolve` on every schedule, so, like `tgsp verify`, it has
a fast path (fast.py); the Typer command in route_cmds.py calls the same function.
"""

from __future__ import annotations

from pathlib import Path

from tgsp.errors import InputError, NotFoundError

from .common import STATE, config, emit_json, index_days_setting, keyring
from .errors import UNCHANGED
from .stdio import no_dash
from .term import say, warn


def _registry_dir(registry: str | Path | None, spec: Path | None) -> Path | str:
    if registry:
        return registry if str(registry).startswith("oci://") else Path(registry)
    if spec:
        from runners.stages.inputs import open_round

        return open_round(spec, None, None).registry_location
    if config().get("route", "registry"):
        value = config().get("route", "registry")
        return value if value.startswith("oci://") else Path(value)
    raise InputError("no registry given", hint="pass --registry DIR (or --spec FILE, or set [route] registry in config.toml)")


def trusted_policy(trusted: list[str] | None = None):
    """The trust policy; a keyring folder that does not exist is a typo, not an empty trust store."""
    kr = keyring()
    if not trusted and not kr.home.is_dir():
        raise NotFoundError(f"keyring folder {kr.home} does not exist",
                            hint="check --home / TGFLOW_HOME, or pass --trusted KEYFILE")
    return kr.trust_policy(trusted=trusted or None)


def open_registry(registry: str | Path | None, spec: Path | None, policy=None, *, create: bool = False):
    """The registry; a folder that does not exist is refused (exit 2), not read as "no routes"."""
    from runners.state.registry import at

    index_days_setting()
    root = _registry_dir(registry, spec)
    if isinstance(root, str):
        from .oci_access import access

        return at(root, policy or trusted_policy(), access=access(), editors_at=keyring().home)
    if root.exists() and not root.is_dir():
        raise InputError(f"registry {root} is not a folder", hint="--registry takes a folder or oci://HOST/REPO")
    if not create and not root.is_dir():
        raise NotFoundError(f"registry folder {root} does not exist",
                            hint="check --registry; a route's first peft run (or route register) creates it")
    return at(root, policy or trusted_policy(), editors_at=keyring().home)


def resolve_alias(route: str, alias: str, state: Path | None, trusted: list[str] | None, registry: Path | None,
                  spec: Path | None, json_out: bool) -> int:
    """Resolve and print; 0 when it changed since ``state`` (or there is none), 20 when unchanged."""
    no_dash(state, "a state file, read and then rewritten", "--state")
    reg = open_registry(registry, spec, trusted_policy(trusted))
    result = reg.resolve(route, alias, reg.policy, state)
    if result["index_expiring"]:
        warn(f"warning: route {route}'s index expires at {result['index_expires']}; after that every resolve "
             f"refuses it. Re-sign it: tgflow route refresh {route} --registry DIR --signing-key KEY")
    if json_out:
        emit_json(result)
    else:
        say(f"{route} {alias}: version {result['version']} {result['package_id']} {result['path']}"
            + ("" if result["changed"] else " (unchanged)"))
    if not result["changed"]:
        STATE.reported = True
        return UNCHANGED
    return 0
