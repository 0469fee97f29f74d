"""The route index: a signed, versioned, expiring document that says which
package each alias of a route (``production``, ``candidate``, ...) names.

It is a DSSE envelope (payloadType ``application/vnd.tgflow.route-index+json``)
whose payload is the canonical (RFC 8785) JSON of the document, signed with
the same hybrid Ed25519 + ML-DSA-65 keys and the same ``signers`` entries as
a package manifest, so one trust policy checks both. See docs/format.md
("The route index") and docs/adr/0009-route-index.md.

Consumers pin the index *version*: a lower version than one already seen is
a replay (rollback attack), the same version with other bytes is a fork, and
an index past its ``expires`` is a freeze. Rolling an alias back to an older
package is a new, higher index version, so it never trips the package
rollback floor.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any, Sequence

from . import clock, dsse, signing
from .canonical import encode, is_int, parse, sha256_hex
from .errors import ExpiredError, FormatError, RollbackError
from .manifest import check_signers

INDEX_TYPE = "application/vnd.tgflow.route-index+json"
FORMAT = "tgflow.route-index/1"
MAX_BYTES = 16 << 20
ALIAS = re.compile(r"^[a-z][a-z0-9-]{0,31}\Z")
PACKAGE_ID = re.compile(r"^sha256:[0-9a-f]{64}\Z")
ROUTE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}\Z")
_FIELDS = {"format", "route", "version", "issued", "expires", "aliases", "packages", "history", "signers"}
_ENTRY = {"package_id", "version", "file", "sha256", "size", "registered", "parent", "evaluation"}


def package_file(package_id: str) -> str:
    """Where a registered package lives, relative to the route's folder: fixed by its id (no traversal)."""
    return f"packages/{package_id.replace(':', '-')}.tgsp"


def sign(doc: dict[str, Any], signers: Sequence[signing.Signer], now: datetime) -> bytes:
    body = {k: v for k, v in doc.items() if k != "signers"}
    body["signers"] = [s.manifest_entry(now) for s in signers]
    check_document(body)
    payload = encode(body)
    sigs = [sig for s in signers for sig in s.sign(INDEX_TYPE, payload)]
    return encode(dsse.Envelope(INDEX_TYPE, payload, tuple(sigs)).to_dict()) + b"\n"


def verify(raw: bytes, policy: signing.TrustPolicy, *, route: str, fresh: bool = True) -> dict[str, Any]:
    """The document, if the bytes are a well-formed index of ``route``, signed by a
    trusted key, and (with ``fresh``) not expired. Raises a PackageError subclass otherwise.
    Only the registry's own editor reads with ``fresh=False``: re-signing is how a frozen index thaws."""
    if len(raw) > MAX_BYTES:
        raise FormatError(f"route index is over {MAX_BYTES} bytes")
    env = dsse.parse(parse(raw, what="route index"), expect_type=INDEX_TYPE)
    doc = parse(env.payload, what="route index payload", canonical=True)
    check_document(doc)
    if doc["route"] != route:
        raise FormatError(f"route index is for route {doc['route']!r}, not {route!r}")
    signing.check(env, doc, policy)
    check_aliases(doc)
    if fresh and policy.now() >= clock.parse(doc["expires"]):
        raise ExpiredError(f"route index version {doc['version']} expired at {doc['expires']} (frozen: nobody has "
                           "re-signed it)", hint="re-sign it: tgflow route promote ROUTE VERSION (or refresh)")
    return doc


def digest(raw: bytes) -> str:
    return "sha256:" + sha256_hex(raw)


def check_consumer(doc: dict[str, Any], raw_digest: str, seen: dict[str, Any] | None) -> None:
    """TUF-style: refuse an index older than (or forked from) the one this consumer last accepted."""
    if not seen:
        return
    have, have_digest = seen.get("index_version"), seen.get("index_sha256")
    if not is_int(have):
        raise FormatError("consumer state holds no index version for this route")
    if doc["version"] < have:
        raise RollbackError(f"route index version {doc['version']} is older than version {have} already seen: "
                            "a replayed index (rollback attack)", hint="do not deploy; find who serves the old index")
    if doc["version"] == have and raw_digest != have_digest:
        raise RollbackError(f"route index version {have} has changed since it was seen: two different documents "
                            "claim one version (a fork)", hint="do not deploy; the registry's signing key may be misused")


def check_document(doc: Any) -> None:
    """The shape of an index document; FormatError naming the first problem."""
    if not isinstance(doc, dict) or set(doc) != _FIELDS or doc.get("format") != FORMAT:
        raise FormatError(f"route index must be a {FORMAT} document with exactly: {', '.join(sorted(_FIELDS))}")
    if not isinstance(doc["route"], str) or not ROUTE.match(doc["route"]):
        raise FormatError("route index has a bad route")
    if not is_int(doc["version"]) or doc["version"] < 1:
        raise FormatError("route index version must be an integer >= 1")
    for key in ("issued", "expires"):
        clock.parse(doc[key], what=f"route index {key}")
    check_signers(doc["signers"])
    if not isinstance(doc["packages"], list) or not isinstance(doc["history"], list):
        raise FormatError("route index packages and history must be lists")
    ids = set()
    for e in doc["packages"]:
        _check_entry(e)
        ids.add(e["package_id"])
    if len(ids) != len(doc["packages"]):
        raise FormatError("route index lists a package twice")
    if not isinstance(doc["aliases"], dict):
        raise FormatError("route index aliases must be an object")
    for name, target in doc["aliases"].items():
        if not ALIAS.match(name) or not isinstance(target, dict) or set(target) != {"package_id", "version"} \
                or target["package_id"] not in ids:
            raise FormatError(f"route index alias {name!r} must name a listed package as {{package_id, version}}")


def check_aliases(doc: dict[str, Any]) -> None:
    """A signed index that contradicts itself is refused: each alias's version is its package's."""
    versions = {e["package_id"]: e["version"] for e in doc["packages"]}
    for name, target in doc["aliases"].items():
        if target["version"] != versions[target["package_id"]] or not is_int(target["version"]):
            raise FormatError(f"route index alias {name!r} says version {target['version']!r}, but the package it "
                              f"names is version {versions[target['package_id']]}")


def _check_entry(e: Any) -> None:
    if not isinstance(e, dict) or set(e) != _ENTRY:
        raise FormatError(f"route index package entries must have exactly: {', '.join(sorted(_ENTRY))}")
    if not isinstance(e["package_id"], str) or not PACKAGE_ID.match(e["package_id"]):
        raise FormatError("route index package_id must be sha256:<64 hex>")
    if e["file"] != package_file(e["package_id"]):
        raise FormatError(f"route index entry file must be {package_file(e['package_id'])!r}")
    if not is_int(e["version"]) or e["version"] < 0 or not is_int(e["size"]) or e["size"] < 0:
        raise FormatError("route index entry version and size must be non-negative integers")
    if not isinstance(e["sha256"], str) or not re.fullmatch(r"[0-9a-f]{64}", e["sha256"]):
        raise FormatError("route index entry sha256 must be 64 hex digits")
    if e["parent"] is not None and (not isinstance(e["parent"], str) or not PACKAGE_ID.match(e["parent"])):
        raise FormatError("route index entry parent must be a package id or null")
    if e["evaluation"] is not None and not isinstance(e["evaluation"], dict):
        raise FormatError("route index entry evaluation must be an object or null")
    clock.parse(e["registered"], what="route index entry registered")
