"""The registry: a folder (local, a PVC, a mounted bucket; no server) holding
each route's signed index and its registered packages.

    <registry>/routes/<route>/index.json              the signed route index (tgsp/route_index.py)
    <registry>/routes/<route>/lock                    flock: one editor at a time
    <registry>/routes/<route>/packages/sha256-<id>.tgsp

Every edit (register, eval, promote, rollback) happens under the route's
registry lock and writes a new index version, signed, atomically; so
concurrent promoters cannot lose an update. Reading needs no lock: the index
is replaced by rename. Nothing here imports torch.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import os
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any, Iterator

import tgsp
from tgsp import clock, route_index
from tgsp.atomic import atomic_file, write_bytes
from tgsp.canonical import encode, is_int, parse
from tgsp.errors import ExpiredError, FormatError, InputError, NotFoundError, RollbackError
from tgsp.inputfile import read_input
from tgsp.signing import Signer, TrustPolicy

from .locks import locked

INDEX_DAYS = 30
MAX_INDEX_DAYS = 3660  # a frozen index must still end some day: at most about ten years
DAYS_ENV = "TGFLOW_INDEX_DAYS"


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
LOCK_WAIT = 30.0


@dataclass
class Registry:
    root: Path
    policy: TrustPolicy  # what the registry's own index and packages must be signed by
    now: clock.Clock = clock.utcnow
    days: int | None = None  # each new index version's lifetime; None: index_days(), read only when editing

    def __post_init__(self) -> None:
        if self.days is not None and not (is_int(self.days) and 1 <= self.days <= MAX_INDEX_DAYS):
            raise InputError(f"the route index lifetime must be 1 to {MAX_INDEX_DAYS} days, not {self.days!r}")

    def route_dir(self, route: str) -> Path:
        if not route_index.ROUTE.match(route):
            raise InputError(f"route {route!r} is not a valid route key", hint="letters, digits, '.', '_', '-'")
        return self.root / "routes" / route

    def routes(self) -> list[str]:
        base = self.root / "routes"
        return sorted(p.name for p in base.iterdir() if (p / "index.json").is_file()) if base.is_dir() else []

    # --- reading ------------------------------------------------------------------------
    def load(self, route: str, policy: TrustPolicy | None = None, *,
             fresh: bool = True) -> tuple[dict[str, Any] | None, bytes]:
        """The verified index of ``route`` (None if it has none yet) and its raw bytes."""
        path = self.route_dir(route) / "index.json"
        if not path.exists():
            return None, b""
        raw = read_input(path, "route index", max_bytes=route_index.MAX_BYTES)
        return route_index.verify(raw, policy or self.policy, route=route, fresh=fresh), raw

    def require(self, route: str) -> dict[str, Any]:
        doc, _ = self.load(route)
        if doc is None:
            raise NotFoundError(f"route {route!r} has no index in the registry {self.root}",
                                hint="register a package first: tgflow route register PKG --registry DIR")
        return doc

    # --- editing ------------------------------------------------------------------------
    @contextlib.contextmanager
    def edit(self, route: str, signer: Signer, command: str) -> Iterator[dict[str, Any]]:
        """A working copy of the index; on a clean exit, the next version, signed and written."""
        folder = self.route_dir(route)
        with locked(folder / "lock", f"registry route {route}", command, wait=LOCK_WAIT):
            doc, _ = self.load(route, fresh=False)
            work = copy.deepcopy(doc) if doc else {"format": route_index.FORMAT, "route": route, "version": 0,
                                                    "aliases": {}, "packages": [], "history": []}
            yield work
            now = self.now()
            work.update(version=(doc["version"] if doc else 0) + 1, issued=clock.fmt(now),
                        expires=clock.fmt(now + timedelta(days=self.days or index_days())))
            write_bytes(folder / "index.json", route_index.sign(work, [signer], now))

    def register(self, package: Path, signer: Signer, *, alias: str | None = "candidate",
                 command: str = "route register") -> dict[str, Any]:
        """Verify ``package``, copy it into the registry, list it (and point ``alias`` at it)."""
        report = tgsp.verify(package, self.policy)
        report.raise_for_failure()
        m = report.manifest
        if m.get("kind") != "adapter":
            raise InputError(f"{package} is a {m.get('kind')!r} package; the registry holds adapters")
        route, pid = m["route"], report.package_id
        with self.edit(route, signer, command) as doc:
            entry = next((e for e in doc["packages"] if e["package_id"] == pid), None)
            if entry is None:
                entry = self._store(route, package, pid, m)
                doc["packages"].append(entry)
            if alias:
                self._point(doc, alias, entry, "register", signer)
        return entry

    def _store(self, route: str, package: Path, pid: str, m: dict[str, Any]) -> dict[str, Any]:
        rel = route_index.package_file(pid)
        dest = self.route_dir(route) / rel
        h, size = hashlib.sha256(), 0
        with open(package, "rb") as src, atomic_file(dest) as out:
            while chunk := src.read(1 << 20):
                h.update(chunk)
                size += len(chunk)
                out.write(chunk)
        copied = tgsp.verify(dest, self.policy)  # the copy, not the source, is what consumers get
        if not copied.ok or copied.package_id != pid:
            dest.unlink(missing_ok=True)
            raise FormatError(f"{package} changed while it was copied into the registry", hint="register it again")
        with tgsp.open_package(dest) as pkg:
            events = {e["type"]: e["data"] for e in pkg.evidence}
        parent = ((events.get("tgflow.inputs") or {}).get("parent") or {}).get("package_id")
        return {"package_id": pid, "version": m["version"], "file": rel, "sha256": h.hexdigest(), "size": size,
                "registered": clock.fmt(self.now()), "parent": parent,
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
        with self.edit(route, signer, "route promote") as doc:
            if doc["version"] == 0:
                raise NotFoundError(f"route {route!r} has no index in the registry {self.root}")
            entry = find(doc, version)
            ev = (entry.get("evaluation") or {}).get("against") or {}
            if ev.get("regressed") and not force:
                raise InputError(f"version {entry['version']} regressed against {ev.get('alias')} in its last evaluation "
                                 f"({ev.get('regression')})", hint="pass --force to promote it anyway")
            self._point(doc, alias, entry, "promote", signer)
        return entry

    def rollback(self, route: str, signer: Signer, *, to: int | None = None, alias: str = "production") -> dict[str, Any]:
        with self.edit(route, signer, "route rollback") as doc:
            current = doc["aliases"].get(alias)
            if current is None:
                raise InputError(f"route {route!r} has no {alias!r} alias to roll back")
            entry = find(doc, to) if to is not None else _previous(doc, alias, current["package_id"])
            if entry["package_id"] == current["package_id"]:
                raise InputError(f"{alias} already names version {entry['version']}")
            self._point(doc, alias, entry, "rollback", signer)
        return entry

    def refresh(self, route: str, signer: Signer, *, revive: bool = False) -> dict[str, Any]:
        """The same aliases and packages in a new index version with a new expiry: a quiet route's
        deploy jobs keep resolving. (No history entry: nothing moved.) An index that has already
        expired is refused unless ``revive``: an old index restored over the live one (a replay)
        would otherwise come back to life, unattended, on the next scheduled refresh."""
        self.require_present(route)  # before the lock, which would create the route's folder
        with self.edit(route, signer, "route refresh") as doc:
            if not revive and self.now() >= clock.parse(doc["expires"]):
                raise ExpiredError(f"route {route}'s index version {doc['version']} expired at {doc['expires']}; "
                                   "refresh re-signs only a live index",
                                   hint=f"check tgflow route history {route}; if that index is the one you expect, "
                                        "re-sign it with --revive")
        return self.require(route)

    def require_present(self, route: str) -> None:
        if not (self.route_dir(route) / "index.json").is_file():
            raise NotFoundError(f"route {route!r} has no index in the registry {self.root}")

    def record_evaluation(self, route: str, version: int, evaluation: dict[str, Any], signer: Signer) -> None:
        with self.edit(route, signer, "route eval") as doc:
            entry = find(doc, version)
            entry["evaluation"] = {**(entry.get("evaluation") or {}), **evaluation}
            doc["history"].append({"index_version": doc["version"] + 1, "action": "eval", "alias": None,
                                   "package_id": entry["package_id"], "version": entry["version"],
                                   "at": clock.fmt(self.now()), "by": signer.name})

    # --- consumers ------------------------------------------------------------------------
    def resolve(self, route: str, alias: str, policy: TrustPolicy, state: Path | None) -> dict[str, Any]:
        """Verify the index and the package ``alias`` names; with ``state``, refuse a replayed,
        forked or frozen index and record what was accepted. ``changed`` says if it moved."""
        doc, raw = self.load(route, policy)
        if doc is None:
            raise NotFoundError(f"route {route!r} has no index in the registry {self.root}")
        seen = load_state(state).get(route) if state else None
        route_index.check_consumer(doc, route_index.digest(raw), seen)
        target = doc["aliases"].get(alias)
        if target is None:
            raise NotFoundError(f"route {route!r} has no alias {alias!r} (has: {', '.join(doc['aliases']) or 'none'})")
        entry = next(e for e in doc["packages"] if e["package_id"] == target["package_id"])
        path = self.route_dir(route) / entry["file"]
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
        return result


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
