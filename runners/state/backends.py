"""Where a route registry keeps its bytes: a folder, or an OCI registry (``oci_backend.py``).

A backend stores and returns the signed route index and the registered packages; it decides
nothing about trust. The ``Registry`` (registry.py) verifies everything it reads, whatever the
backend, so a consumer's checks (signature, expiry, replay, fork) are the same on both.

    <registry>/routes/<route>/index.json              the signed route index (tgsp/route_index.py)
    <registry>/routes/<route>/lock                    flock: one editor at a time
    <registry>/routes/<route>/packages/sha256-<id>.tgsp
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from pathlib import Path
from typing import Any, Iterator, Protocol

from tgsp import route_index
from tgsp.atomic import atomic_file, write_bytes
from tgsp.errors import InputError
from tgsp.inputfile import read_input

from .locks import locked

LOCK_WAIT = 30.0


class Backend(Protocol):
    where: str  # for messages: the folder, or the oci:// reference

    def routes(self) -> list[str]: ...
    def read_index(self, route: str) -> tuple[bytes | None, str | None]: ...
    def write_index(self, route: str, raw: bytes, token: str | None) -> None: ...
    def editing(self, route: str, command: str) -> contextlib.AbstractContextManager: ...
    def store(self, route: str, package: Path, package_id: str) -> tuple[str, int]: ...
    def package_path(self, route: str, entry: dict[str, Any]) -> Path: ...
    def registered(self, route: str, entry: dict[str, Any], raw_index: bytes) -> None: ...


def cache_dir(env=os.environ) -> Path:
    """Where an OCI registry's packages are kept once downloaded (encrypted, as in the registry)."""
    if env.get("TGFLOW_CACHE"):
        return Path(env["TGFLOW_CACHE"])
    base = Path(env["XDG_CACHE_HOME"]) if env.get("XDG_CACHE_HOME") else Path.home() / ".cache"
    return base / "tgflow"


def check_route(route: str) -> None:
    if not route_index.ROUTE.match(route):
        raise InputError(f"route {route!r} is not a valid route key", hint="letters, digits, '.', '_', '-'")


class FolderBackend:
    """A folder (local, a PVC, a mounted bucket): edits under the route's flock, the index
    replaced by rename, so readers need no lock."""

    def __init__(self, root: Path) -> None:
        self.root, self.where = Path(root), str(root)

    def route_dir(self, route: str) -> Path:
        check_route(route)
        return self.root / "routes" / route

    def routes(self) -> list[str]:
        base = self.root / "routes"
        return sorted(p.name for p in base.iterdir() if (p / "index.json").is_file()) if base.is_dir() else []

    def read_index(self, route: str) -> tuple[bytes | None, str | None]:
        path = self.route_dir(route) / "index.json"
        if not path.exists():
            return None, None
        return read_input(path, "route index", max_bytes=route_index.MAX_BYTES), None

    def write_index(self, route: str, raw: bytes, token: str | None) -> None:
        write_bytes(self.route_dir(route) / "index.json", raw)

    @contextlib.contextmanager
    def editing(self, route: str, command: str) -> Iterator[None]:
        with locked(self.route_dir(route) / "lock", f"registry route {route}", command, wait=LOCK_WAIT):
            yield

    def store(self, route: str, package: Path, package_id: str) -> tuple[str, int]:
        dest = self.package_path(route, {"package_id": package_id, "file": route_index.package_file(package_id)})
        h, size = hashlib.sha256(), 0
        with open(package, "rb") as src, atomic_file(dest) as out:
            while chunk := src.read(1 << 20):
                h.update(chunk)
                size += len(chunk)
                out.write(chunk)
        return h.hexdigest(), size

    def package_path(self, route: str, entry: dict[str, Any]) -> Path:
        return self.route_dir(route) / route_index.package_file(entry["package_id"])

    def discard(self, route: str, package_id: str) -> None:
        self.package_path(route, {"package_id": package_id}).unlink(missing_ok=True)

    def registered(self, route: str, entry: dict[str, Any], raw_index: bytes) -> None:
        """Nothing to attach in a folder: the index beside the package already names it."""
