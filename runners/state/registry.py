"""The registry: each route's signed index and its registered packages, kept by a backend
(backends.py): a folder (local, a PVC, a mounted bucket; no server), or an OCI registry
(oci_backend.py, ``oci://HOST/REPO``).

Every edit (register, eval, promote, rollback, refresh) reads the index, changes it, and
writes the next version, signed; the backend makes that one step (a folder under the route's
flock, an OCI registry by compare-and-swap on the index tag, redone on conflict), so
concurrent editors cannot lose an update. Readers need no lock, and everything read is
verified here, whatever the backend. Nothing here imports torch.
"""

from __future__ import annotations

import copy
import hashlib
import os
import random
import time
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any, Callable

import tgsp
from tgsp import clock, route_index
from tgsp.atomic import write_bytes
from tgsp.canonical import encode, is_int, parse
from tgsp.errors import (ExpiredError, FormatError, InputError, NotFoundError, RegistryConflict, RollbackError)
from tgsp.inputfile import read_input
from tgsp.signing import Signer, TrustPolicy

from . import editors
from .backends import Backend, FolderBackend

INDEX_DAYS = 30
MAX_INDEX_DAYS = 3660  # a frozen index must still end some day: at most about ten years
DAYS_ENV = "TGFLOW_INDEX_DAYS"
EDIT_TRIES = 8


def index_days(env=os.environ) -> int:
    """How long each new route index version is valid: $TGFLOW_INDEX_DAYS, else 30 days. A quiet
    route's index must be re-signed (`tgflow route refresh`) before then, or its deploys freeze."""
    raw = env.get(DAYS_ENV, "").strip()
    if not raw:
        return INDEX_DAYS
    if not (raw.isascii() and raw.isdigit() and len(raw) <= 4) or not 1 <= int(raw) <= MAX_INDEX_DAYS:
        raise InputError(f"{DAYS_ENV}={raw[:20]!r} is not a number of days from 1 to {MAX_INDEX_DAYS}")
    return int(raw)
STATE_FORMAT = "tgflow.route-consumer-state/1"


@dataclass
class Registry:
    root: Path | str  # the folder, or the oci:// reference (for messages)
    policy: TrustPolicy  # what the registry's own index and packages must be signed by
    now: clock.Clock = clock.utcnow
    days: int | None = None  # each new index version's lifetime; None: index_days(), read only when editing
    backend: Backend | None = field(default=None, repr=False)
    editors: Path | None = None  # this machine's editor state (editors.py): never edit a replayed index

    def __post_init__(self) -> None:
        if self.days is not None and not (is_int(self.days) and 1 <= self.days <= MAX_INDEX_DAYS):
            raise InputError(f"the route index lifetime must be 1 to {MAX_INDEX_DAYS} days, not {self.days!r}")
        if self.backend is None:
            self.backend = FolderBackend(Path(self.root))

    def route_dir(self, route: str) -> Path:
        """A folder registry's route folder (the folder backend only)."""
        return self.backend.route_dir(route)

    def routes(self) -> list[str]:
        return self.backend.routes()

    def where(self, route: str, package_id: str | None = None) -> str:
        """Where a route (or one of its packages) lives, for reports: a path, or an oci:// reference."""
        if isinstance(self.backend, FolderBackend):
            folder = self.backend.route_dir(route)
            return str(folder / route_index.package_file(package_id) if package_id else folder)
        return f"{self.root}:" + (f"pkg-{package_id[7:]}" if package_id else f"index-{route}")

    def package_path(self, route: str, entry: dict[str, Any]) -> Path:
        """A local file of the registered package ``entry`` names (an OCI registry's is downloaded
        once into the cache). Not yet verified: callers verify it."""
        return self.backend.package_path(route, entry)

    # --- reading ------------------------------------------------------------------------
    def load(self, route: str, policy: TrustPolicy | None = None, *,
             fresh: bool = True) -> tuple[dict[str, Any] | None, bytes]:
        """The verified index of ``route`` (None if it has none yet) and its raw bytes."""
        raw, _ = self.backend.read_index(route)
        if raw is None:
            return None, b""
        return route_index.verify(raw, policy or self.policy, route=route, fresh=fresh), raw

    def require(self, route: str) -> dict[str, Any]:
        doc, _ = self.load(route)
        if doc is None:
            raise self._absent(route)
        return doc

    def _absent(self, route: str) -> NotFoundError:
        return NotFoundError(f"route {route!r} has no index in the registry {self.root}",
                             hint="register a package first: tgflow route register PKG --registry REGISTRY")

    # --- editing ------------------------------------------------------------------------
    def _edit(self, route: str, signer: Signer, command: str, change: Callable[[dict], Any], *,
              any_base: bool = False) -> tuple[Any, bytes]:
        """Apply ``change`` to the index and write the next version, signed; redone on top of
        the newer index if another editor wrote meanwhile. (what ``change`` returned, the bytes).
        ``any_base``: edit even an index older than this machine's editors have seen (--revive)."""
        with self.backend.editing(route, command):
            for attempt in range(EDIT_TRIES):
                raw, token = self.backend.read_index(route)
                doc = route_index.verify(raw, self.policy, route=route, fresh=False) if raw is not None else None
                if self.editors:
                    editors.ready(self.editors)
                if self.editors and not any_base:
                    editors.check(self.editors, self._key(), route, doc, raw)
                work = copy.deepcopy(doc) if doc else {"format": route_index.FORMAT, "route": route, "version": 0,
                                                        "aliases": {}, "packages": [], "history": []}
                result = change(work)
                now = self.now()
                work.update(version=(doc["version"] if doc else 0) + 1, issued=clock.fmt(now),
                            expires=clock.fmt(now + timedelta(days=self.days or index_days())))
                signed = route_index.sign(work, [signer], now)
                try:
                    self.backend.write_index(route, signed, token)
                    if self.editors:
                        editors.record(self.editors, self._key(), route, work["version"], signed, lower=any_base)
                    return result, signed
                except RegistryConflict:
                    if attempt == EDIT_TRIES - 1:
                        raise
                    time.sleep(random.uniform(0.05, 0.25) * (attempt + 1))
        raise AssertionError("unreachable")

    def _key(self) -> str:
        return self.backend.where if not isinstance(self.backend, FolderBackend) else str(Path(self.root).resolve())

    def register(self, package: Path, signer: Signer, *, alias: str | None = "candidate",
                 command: str = "route register") -> dict[str, Any]:
        """Verify ``package``, store it in the registry, list it (and point ``alias`` at it)."""
        report = tgsp.verify(package, self.policy)
        report.raise_for_failure()
        m = report.manifest
        if m.get("kind") != "adapter":
            raise InputError(f"{package} is a {m.get('kind')!r} package; the registry holds adapters")
        route, pid = m["route"], report.package_id
        stored: dict[str, Any] = {}

        def change(doc: dict) -> dict[str, Any]:
            entry = next((e for e in doc["packages"] if e["package_id"] == pid), None)
            if entry is None:
                if "entry" not in stored:  # a redone edit does not store twice
                    stored["entry"] = self._store(route, package, pid, m)
                entry = copy.deepcopy(stored["entry"])
                doc["packages"].append(entry)
            if alias:
                self._point(doc, alias, entry, "register", signer)
            return entry

        entry, raw = self._edit(route, signer, command, change)
        self.backend.registered(route, entry, raw)
        return entry

    def _store(self, route: str, package: Path, pid: str, m: dict[str, Any]) -> dict[str, Any]:
        sha, size = self.backend.store(route, package, pid)
        stored = self.backend.package_path(route, {"package_id": pid, "sha256": sha, "size": size})
        copied = tgsp.verify(stored, self.policy)  # the copy, not the source, is what consumers get
        if not copied.ok or copied.package_id != pid or _sha256(stored) != sha:
            self.backend.discard(route, pid)
            raise FormatError(f"{package} changed while it was copied into the registry", hint="register it again")
        with tgsp.open_package(stored) as pkg:
            events = {e["type"]: e["data"] for e in pkg.evidence}
        parent = ((events.get("tgflow.inputs") or {}).get("parent") or {}).get("package_id")
        return {"package_id": pid, "version": m["version"], "file": route_index.package_file(pid), "sha256": sha,
                "size": size, "registered": clock.fmt(self.now()), "parent": parent,
                "evaluation": _summary(events.get("tgflow.evaluation"))}

    def _point(self, doc: dict[str, Any], alias: str, entry: dict[str, Any], action: str, signer: Signer) -> None:
        if not route_index.ALIAS.match(alias):
            raise InputError(f"alias {alias!r} is not valid", hint="lowercase letters, digits and '-', e.g. production")
        doc["aliases"][alias] = {"package_id": entry["package_id"], "version": entry["version"]}
        doc["history"].append({"index_version": doc["version"] + 1, "action": action, "alias": alias,
                               "package_id": entry["package_id"], "version": entry["version"],
                               "at": clock.fmt(self.now()), "by": signer.name})

    def promote(self, route: str, version: int | str, signer: Signer, *, alias: str = "production",
                force: bool = False) -> dict[str, Any]:
        def change(doc: dict) -> dict[str, Any]:
            if doc["version"] == 0:
                raise self._absent(route)
            entry = find(doc, version)
            ev = (entry.get("evaluation") or {}).get("against") or {}
            if ev.get("regressed") and not force:
                raise InputError(f"version {entry['version']} regressed against {ev.get('alias')} in its last evaluation "
                                 f"({ev.get('regression')})", hint="pass --force to promote it anyway")
            self._point(doc, alias, entry, "promote", signer)
            return entry

        return self._edit(route, signer, "route promote", change)[0]

    def rollback(self, route: str, signer: Signer, *, to: int | None = None, alias: str = "production") -> dict[str, Any]:
        def change(doc: dict) -> dict[str, Any]:
            current = doc["aliases"].get(alias)
            if current is None:
                raise InputError(f"route {route!r} has no {alias!r} alias to roll back")
            entry = find(doc, to) if to is not None else _previous(doc, alias, current["package_id"])
            if entry["package_id"] == current["package_id"]:
                raise InputError(f"{alias} already names version {entry['version']}")
            self._point(doc, alias, entry, "rollback", signer)
            return entry

        return self._edit(route, signer, "route rollback", change)[0]

    def refresh(self, route: str, signer: Signer, *, revive: bool = False) -> dict[str, Any]:
        """The same aliases and packages in a new index version with a new expiry: a quiet route's
        deploy jobs keep resolving. (No history entry: nothing moved.) An index that has already
        expired is refused unless ``revive``: an old index restored over the live one (a replay)
        would otherwise come back to life, unattended, on the next scheduled refresh."""
        self.require_present(route)  # before the lock, which would create the route's folder

        def change(doc: dict) -> None:
            if not revive and self.now() >= clock.parse(doc["expires"]):
                raise ExpiredError(f"route {route}'s index version {doc['version']} expired at {doc['expires']}; "
                                   "refresh re-signs only a live index",
                                   hint=f"check tgflow route history {route}; if that index is the one you expect, "
                                        "re-sign it with --revive")

        self._edit(route, signer, "route refresh", change, any_base=revive)
        return self.require(route)

    def require_present(self, route: str) -> None:
        if self.backend.read_index(route)[0] is None:
            raise self._absent(route)

    def record_evaluation(self, route: str, version: int, evaluation: dict[str, Any], signer: Signer) -> None:
        def change(doc: dict) -> None:
            entry = find(doc, version)
            entry["evaluation"] = {**(entry.get("evaluation") or {}), **evaluation}
            doc["history"].append({"index_version": doc["version"] + 1, "action": "eval", "alias": None,
                                   "package_id": entry["package_id"], "version": entry["version"],
                                   "at": clock.fmt(self.now()), "by": signer.name})

        self._edit(route, signer, "route eval", change)

    # --- consumers ------------------------------------------------------------------------
    def resolve(self, route: str, alias: str, policy: TrustPolicy, state: Path | None) -> dict[str, Any]:
        """Verify the index and the package ``alias`` names; with ``state``, refuse a replayed,
        forked or frozen index and record what was accepted. ``changed`` says if it moved."""
        return self.resolve_verified(route, alias, policy, state)[0]

    def resolve_verified(self, route: str, alias: str, policy: TrustPolicy,
                         state: Path | None) -> tuple[dict[str, Any], Any]:
        """``resolve``, and the package's verification report (to read its payload without
        verifying it again)."""
        doc, raw = self.load(route, policy)
        if doc is None:
            raise NotFoundError(f"route {route!r} has no index in the registry {self.root}")
        seen = load_state(state).get(route) if state else None
        route_index.check_consumer(doc, route_index.digest(raw), seen)
        target = doc["aliases"].get(alias)
        if target is None:
            raise NotFoundError(f"route {route!r} has no alias {alias!r} (has: {', '.join(doc['aliases']) or 'none'})")
        entry = next(e for e in doc["packages"] if e["package_id"] == target["package_id"])
        path = self.package_path(route, entry)
        pinned = TrustPolicy(trusted=policy.trusted, revocations=policy.revocations, now=policy.now, route=route,
                             kind="adapter", require_hardware=policy.require_hardware)
        report = tgsp.verify(path, pinned)
        report.raise_for_failure()
        if report.package_id != entry["package_id"] or _sha256(path) != entry["sha256"]:
            raise RollbackError(f"{path} is not the package the index names for {alias}")
        changed = not seen or seen.get("aliases", {}).get(alias) != entry["package_id"]
        result = {"route": route, "alias": alias, "index_version": doc["version"], "index_expires": doc["expires"],
                  "index_expiring": expiring(doc, self.now()),
                  "package_id": entry["package_id"], "version": entry["version"], "path": str(path), "changed": changed}
        if state:
            record_state(state, route, alias, doc, raw, seen)
        return result, report


def at(location: Path | str, policy: TrustPolicy, now: clock.Clock = clock.utcnow, access=None,
       editors_at: Path | None = None) -> Registry:
    """The registry at a folder or an ``oci://HOST/REPO`` reference (``access``: how to reach it;
    ``editors_at``: the keyring folder, whose editor state every edit checks and records)."""
    text = str(location)
    state = editors_at / editors.FILE if editors_at else None
    if not text.startswith("oci://"):
        return Registry(Path(location), policy, now, editors=state)
    from runners.oci import refs
    from runners.oci.client import Access

    from .oci_backend import OciBackend

    ref = refs.parse(text)
    if ref.reference:
        raise InputError(f"registry {text[:200]} names a tag or digest", hint="give oci://HOST[:PORT]/REPO")
    return Registry(text, policy, now, backend=OciBackend(ref, access or Access.from_env()), editors=state)


def expiring(doc: dict[str, Any], now) -> bool:
    """Less than a quarter of the index's lifetime is left: time to `route refresh` it."""
    issued, expires = clock.parse(doc["issued"]), clock.parse(doc["expires"])
    return expires - now < (expires - issued) / 4


def find(doc: dict[str, Any], version: int | str) -> dict[str, Any]:
    """The latest-registered package of ``version``: a number, ``latest`` (the highest registered
    version) or an alias's name (what it names now), as MLflow users type them."""
    if isinstance(version, str) and not version.isdigit():
        return _by_name(doc, version)
    version = int(version)
    hits = [e for e in doc["packages"] if e["version"] == version]
    if not hits:
        have = ", ".join(str(e["version"]) for e in doc["packages"]) or "none"
        raise NotFoundError(f"route {doc['route']!r} has no registered version {version} (has: {have})")
    return hits[-1]


def _by_name(doc: dict[str, Any], name: str) -> dict[str, Any]:
    if name == "latest":
        if not doc["packages"]:
            raise NotFoundError(f"route {doc['route']!r} has no registered version")
        return find(doc, max(e["version"] for e in doc["packages"]))
    target = doc["aliases"].get(name)
    if target is None:
        have = ", ".join(sorted(doc["aliases"])) or "none"
        raise NotFoundError(f"route {doc['route']!r} has no alias {name!r} (has: {have})",
                            hint="give a version number, 'latest', or an alias's name")
    listed = [e for e in doc["packages"] if e["package_id"] == target["package_id"]]
    if not listed:
        raise NotFoundError(f"alias {name!r} names a package that is not listed in route {doc['route']!r}")
    return listed[-1]


def _previous(doc: dict[str, Any], alias: str, current: str) -> dict[str, Any]:
    listed = {e["package_id"]: e for e in doc["packages"]}
    for h in reversed(doc["history"]):  # informative in the format: read defensively, signed or not
        if not isinstance(h, dict) or h.get("alias") != alias or h.get("action") not in ("promote", "rollback",
                                                                                          "register"):
            continue
        if h.get("package_id") != current and h.get("package_id") in listed:
            return listed[h["package_id"]]
    raise InputError(f"{alias} has named no other package before; nothing to roll back to",
                     hint="give --to VERSION")


def _summary(evaluation: dict[str, Any] | None) -> dict[str, Any] | None:
    if not evaluation:
        return None
    keep = ("eval_examples", "passed", "exact_match", "choice_accuracy", "eval_loss_after", "eval_improvement")
    return {"round": {k: evaluation[k] for k in keep if k in evaluation}}


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def load_state(path: Path) -> dict[str, Any]:
    if not path.exists() and not path.is_symlink():
        return {}
    try:
        obj = parse(read_input(path, "consumer state", max_bytes=1 << 20), what=f"consumer state {path}")
    except FormatError as exc:  # the consumer's own file: bad input (exit 2), not a failed verification
        raise InputError(f"consumer state {path} is unreadable: {exc}", hint="restore it from a backup") from None
    if not isinstance(obj, dict) or obj.get("format") != STATE_FORMAT or not isinstance(obj.get("routes"), dict):
        raise InputError(f"consumer state {path} is not a {STATE_FORMAT} document",
                         hint="restore it; a fresh state would accept any older index")
    for r in obj["routes"].values():
        if not isinstance(r, dict) or not is_int(r.get("index_version")):
            raise InputError(f"consumer state {path} is damaged", hint="restore it from a backup")
    return obj["routes"]


def record_state(path: Path, route: str, alias: str, doc: dict[str, Any], raw: bytes, seen: dict | None) -> None:
    routes = load_state(path)
    aliases = dict((seen or {}).get("aliases", {}))
    aliases[alias] = doc["aliases"][alias]["package_id"]
    routes[route] = {"index_version": doc["version"], "index_sha256": route_index.digest(raw), "aliases": aliases,
                     "checked": clock.fmt(clock.utcnow())}
    write_bytes(path, encode({"format": STATE_FORMAT, "routes": routes}) + b"\n", mode=0o600)
