"""Verifying packages.

``open_package`` (package.py) does the format pass: it walks the archive's headers
(seeking over data), then reads and strictly parses the DSSE envelope and
the manifest inside it, once. ``verify`` then runs the checks in a fixed
order, cheapest first, and stops at the first failure (the rest are
reported ``not-run``):

  format, entries, signatures, evidence, digests, expiry, rollback

So nothing unsigned or untrusted costs more than reading its envelope: the
payload is hashed only under a trusted signature. The manifest bytes are
parsed exactly once; the signature checks run over those same bytes, so
what is verified is what is used.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, Callable

from . import _shards, clock, manifest as mf, signing
from .atomic import write_bytes
from .canonical import is_int, parse
from .errors import ExpiredError, FormatError, InputError, NotFoundError, RollbackError, TgflowError, VerificationFailed
from .inputfile import read_input
from .keys import PublicKey
from .package import DEFAULT_LIMITS, Limits, open_package

CHECKS = ("format", "entries", "signatures", "evidence", "digests", "expiry", "rollback")
ROLLBACK_STATE = "tgflow-rollback-state/1"
MAX_STATE = 4 << 20


# --- the report ----------------------------------------------------------------
@dataclass
class Check:
    name: str
    status: str  # "ok", "failed", "skipped" (not asked for), "not-run" (format failed)
    detail: str
    hint: str | None = None


@dataclass
class VerifyReport:
    path: str
    checks: list[Check] = field(default_factory=list)
    package_id: str | None = None
    manifest: dict[str, Any] | None = None
    notes: list[str] = field(default_factory=list)
    trusted_signers: set[str] = field(default_factory=set)

    @property
    def ok(self) -> bool:
        return all(c.status in ("ok", "skipped") for c in self.checks) and len(self.checks) == len(CHECKS)

    @property
    def first_failure(self) -> Check | None:
        return next((c for c in self.checks if c.status == "failed"), None)

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": self.path, "ok": self.ok, "package_id": self.package_id,
            "route": self.manifest.get("route") if self.manifest else None,
            "version": self.manifest.get("version") if self.manifest else None,
            "kind": self.manifest.get("kind") if self.manifest else None,
            "checks": [{"name": c.name, "status": c.status, "detail": c.detail} for c in self.checks],
            "signers": self.signers(),
            "notes": self.notes,
        }

    def signers(self) -> list[dict[str, Any]]:
        """Each signer as structured fields: name, key id, algorithms and their
        component key ids, lineage version, when it signed, custody, trusted."""
        if not self.manifest:
            return []
        custody = self.manifest.get("custody") or {}
        out = []
        for s in self.manifest["signers"]:
            key = PublicKey.from_dict({"kind": "signing", "public": s["public"]})
            out.append({"name": s["name"], "keyid": s["keyid"], "version": s["version"], "signed_at": s["signed_at"],
                        "algorithms": [{"algorithm": alg, "keyid": kid} for alg, kid in sorted(key.component_ids().items())],
                        "custody": custody.get(s["keyid"]), "trusted": s["keyid"] in self.trusted_signers})
        return out

    def raise_for_failure(self) -> None:
        bad = self.first_failure
        if bad is not None:
            lead = _IN_WORDS.get(bad.name, "")
            raise VerificationFailed(f"{lead}{bad.name} check failed: {bad.detail}", self, hint=bad.hint)


# What a failed check means to a user, before the check's own detail.
_IN_WORDS = {"format": "package is corrupted or not a TGSP package: ", "digests": "package is corrupted: "}


def _run(report: VerifyReport, name: str, fn: Callable[[], str | None]) -> None:
    """Run one check, unless an earlier one failed (then it is ``not-run``)."""
    bad = report.first_failure
    if bad is not None:
        report.checks.append(Check(name, "not-run", f"{bad.name} check failed"))
        return
    try:
        detail = fn()
        report.checks.append(Check(name, "skipped" if detail is None else "ok", detail or "not requested"))
    except TgflowError as exc:
        report.checks.append(Check(name, "failed", str(exc), exc.hint))


def verify(path: str | os.PathLike | BinaryIO, policy: signing.TrustPolicy, *,
           limits: Limits = DEFAULT_LIMITS, progress: Callable[[int], None] | None = None,
           payload_digests: bool = True) -> VerifyReport:
    """Run every check and return the report. Never raises for a bad package.

    ``payload_digests=False`` is for callers that stream the payload anyway
    (unpack): they must hash it against the manifest before using it."""
    report = VerifyReport(str(path) if isinstance(path, (str, os.PathLike)) else "<stream>")
    _shards.threads()  # a bad TGFLOW_HASH_THREADS is the caller's mistake (exit 2), not the package's
    try:
        pkg = open_package(path, limits=limits)
    except (NotFoundError, InputError):
        raise
    except TgflowError as exc:
        report.checks.append(Check("format", "failed", str(exc), exc.hint))
        report.checks += [Check(n, "not-run", "format check failed") for n in CHECKS[1:]]
        return report
    with pkg:
        m = report.manifest = pkg.manifest
        report.package_id = pkg.package_id
        report.checks.append(Check("format", "ok", f"{mf.FORMAT}, {len(pkg.entries)} entries, canonical"))
        def sigs() -> str:
            notes = signing.check(pkg.envelope, m, policy, report.trusted_signers)
            report.notes += notes[1:]
            return notes[0]

        _run(report, "entries", pkg.check_entries)
        _run(report, "signatures", sigs)
        _run(report, "evidence", pkg.check_evidence)
        _run(report, "digests", lambda: pkg.check_digests(progress, payload=payload_digests))
        _run(report, "expiry", lambda: _check_expiry(m, policy))
        _run(report, "rollback", lambda: _check_rollback(m, pkg.package_id, policy))
    return report


def _check_expiry(m: dict[str, Any], policy: signing.TrustPolicy) -> str | None:
    if "expires" not in m:
        return "no expiry set"
    now = policy.now()
    if now >= clock.parse(m["expires"]):
        raise ExpiredError(f"package expired at {m['expires']} (now {clock.fmt(now)})")
    return f"valid until {m['expires']}"


def _check_rollback(m: dict[str, Any], pid: str, policy: signing.TrustPolicy) -> str | None:
    """Route and kind pins, then the version floor (from --min-version and --state)."""
    route, version, kind = m["route"], m["version"], m["kind"]
    if policy.route is not None and route != policy.route:
        raise RollbackError(f"package is for route {route!r}, not the expected {policy.route!r}")
    if policy.kind is not None and kind != policy.kind:
        raise RollbackError(f"package is of kind {kind!r}, not the expected {policy.kind!r}")
    pins = "".join(f", {k} pinned" for k, v in (("route", policy.route), ("kind", policy.kind)) if v is not None)
    if policy.min_version is None and policy.rollback_state is None:
        return f"route {route} kind {kind}{pins}" if pins else None
    floor = policy.min_version or 0
    routes = (policy.rollback_state or {}).get("routes", {})
    seen = routes.get(route)
    if policy.rollback_state is not None and seen is None and routes and policy.route is None:
        raise RollbackError(f"route {route!r} is not one this state file tracks ({', '.join(sorted(routes))})",
                            hint=f"name it to accept it: --route {route}")
    if seen is not None:
        floor = max(floor, seen["version"])
        if seen.get("kind", kind) != kind and policy.kind is None:
            raise RollbackError(f"route {route} was seen with kind {seen['kind']!r}, this package is {kind!r}",
                                hint=f"name it to accept it: --kind {kind}")
        if version == seen["version"] and pid != seen["package_id"]:
            raise RollbackError(f"route {route} version {version} was already seen with different content")
    if version < floor:
        raise RollbackError(f"route {route} version {version} is below the rollback floor {floor}")
    return f"route {route} kind {kind} version {version} >= floor {floor}{pins}"


# --- rollback state files ------------------------------------------------------
def load_rollback_state(path: str | os.PathLike) -> dict[str, Any]:
    p = Path(path)
    if not p.exists() and not p.is_symlink():
        return {"format": ROLLBACK_STATE, "routes": {}}
    try:
        obj = parse(read_input(p, "rollback state", max_bytes=MAX_STATE), what=f"rollback state {p}")
    except FormatError as exc:
        raise InputError(f"rollback state {p} is unreadable: {exc}") from None
    routes = obj.get("routes") if isinstance(obj, dict) and obj.get("format") == ROLLBACK_STATE else None
    if not isinstance(routes, dict) or not all(
            isinstance(v, dict) and is_int(v.get("version")) and isinstance(v.get("package_id"), str)
            and isinstance(v.get("kind", ""), str) for v in routes.values()):
        raise InputError(f"rollback state {p} is malformed", hint="restore it from backup; never delete it to get past a check")
    return obj


def record_rollback_state(path: str | os.PathLike, report: VerifyReport) -> None:
    """After a successful verify, raise the route's floor to this version."""
    if not report.ok or report.manifest is None:
        raise ValueError("only a verified package may move the rollback floor")
    state = load_rollback_state(path)
    route, version = report.manifest["route"], report.manifest["version"]
    seen = state["routes"].get(route)
    if seen is None or version > seen["version"]:
        state["routes"][route] = {"version": version, "package_id": report.package_id, "kind": report.manifest["kind"]}
        write_bytes(path, (json.dumps(state, indent=2, sort_keys=True) + "\n").encode())
