"""The TGSP v1 manifest: validation of the signed document.

The manifest is kept as the parsed dict so that fields this version does not
know survive a read/write cycle (``tgsp sign`` rewrites it). A field named
in ``critical`` must be understood, or the package is rejected.
"""

from __future__ import annotations

import re
from typing import Any

from . import _kem, _shards, _stream, clock
from .canonical import is_int
from .errors import FormatError, InputError, LimitError
from .paths import casefold_key, check_relpath

FORMAT = "tgsp/1"
PAYLOAD_PREFIX = "payload/"
EVIDENCE_ENTRY = "evidence.jsonl"
PROVENANCE_ENTRY = "provenance.json"
ENVELOPE_ENTRY = "envelope.json"
SIGNATURE_POLICY = {"algorithms": ["ed25519", "ml-dsa-65"], "rule": "every-signer-every-algorithm"}
SHARDS = "shards"  # an extension, not a field: named in ``critical`` when a stored digest is sharded
KNOWN = {
    SHARDS, "format", "kind", "route", "version", "created", "expires", "files", "encryption",
    "evidence", "provenance", "signers", "signature_policy", "critical", "custody",
}
CUSTODIES = ("software", "pkcs11")
MAX_FILES = 10_000
MAX_RECIPIENTS = 256
MAX_SIGNERS = 16
_HEX64 = re.compile(r"[0-9a-f]{64}\Z")
_ROUTE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}\Z")
_KIND = re.compile(r"[a-z0-9][a-z0-9.-]{0,63}\Z")
MAX_VERSION = 2**53 - 1  # versions are JSON integers: exact in every reader


def check_fields(route: Any = None, kind: Any = None, version: Any = None) -> None:
    """A caller's route, kind and version, before they go into (or are compared with) a
    manifest: bad input (exit 2), not a package that fails to verify."""
    if route is not None and not (isinstance(route, str) and _ROUTE.match(route)):
        raise InputError(f"route {route!r} is not a route name",
                         hint="1-128 of A-Z a-z 0-9 . _ -, starting with a letter or digit")
    if kind is not None and not (isinstance(kind, str) and _KIND.match(kind)):
        raise InputError(f"kind {kind!r} is not a package kind",
                         hint="1-64 of a-z 0-9 . -, starting with a letter or digit")
    if version is not None and not (isinstance(version, int) and not isinstance(version, bool)
                                    and 0 <= version <= MAX_VERSION):
        raise InputError(f"version {version!r} is out of range", hint=f"a whole number from 0 to {MAX_VERSION}")


def _exact(obj: Any, keys: set[str], what: str) -> dict:
    if not isinstance(obj, dict) or set(obj) != keys:
        raise FormatError(f"manifest {what} must have exactly: {', '.join(sorted(keys))}")
    return obj


def _hex(value: Any, what: str) -> str:
    if not isinstance(value, str) or not _HEX64.match(value):
        raise FormatError(f"manifest {what} must be 64 lowercase hex digits")
    return value


def _size(value: Any, what: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise FormatError(f"manifest {what} must be a non-negative integer")
    return value


def validate(m: Any) -> dict:
    """Check the manifest's shape and internal consistency; return it."""
    if not isinstance(m, dict):
        raise FormatError("manifest is not a JSON object")
    _check_header(m)
    enc = m.get("encryption")
    if enc is not None:
        _check_encryption(enc)
    _check_files(m.get("files"), enc, m.get("critical", []))
    ev = _exact(m.get("evidence"), {"size", "sha256", "head", "count"}, "evidence ")
    _size(ev["size"], "evidence size"), _hex(ev["sha256"], "evidence sha256"), _hex(ev["head"], "evidence head")
    _size(ev["count"], "evidence count")
    pv = _exact(m.get("provenance"), {"size", "sha256"}, "provenance ")
    _size(pv["size"], "provenance size"), _hex(pv["sha256"], "provenance sha256")
    if m.get("signature_policy") != SIGNATURE_POLICY:
        raise FormatError("manifest signature_policy must require both ed25519 and ml-dsa-65 from every signer")
    _check_custody(m.get("custody"), check_signers(m.get("signers")))
    return m


def _check_header(m: dict) -> None:
    if m.get("format") != FORMAT:
        raise FormatError(f"unsupported format {m.get('format')!r}; this tgflow reads {FORMAT}",
                          hint="upgrade tgflow to read newer package formats")
    critical = m.get("critical", [])
    if not isinstance(critical, list) or any(not isinstance(c, str) for c in critical):
        raise FormatError("manifest critical must be a list of field names")
    unknown = [c for c in critical if c not in KNOWN]
    if unknown:
        raise FormatError(f"package requires extension(s) this tgflow does not understand: {', '.join(unknown)}")
    if not isinstance(m.get("kind"), str) or not _KIND.match(m["kind"]):
        raise FormatError("manifest kind must be a short lowercase word")
    if not isinstance(m.get("route"), str) or not _ROUTE.match(m["route"]):
        raise FormatError("manifest route must be 1-128 of A-Z a-z 0-9 . _ -")
    version = m.get("version")
    if not isinstance(version, int) or isinstance(version, bool) or not 0 <= version <= MAX_VERSION:
        raise FormatError("manifest version must be an integer from 0 to 2^53-1")
    clock.parse(m.get("created"), what="manifest created")
    if "expires" in m:
        clock.parse(m["expires"], what="manifest expires")


def _check_encryption(enc: Any) -> None:
    _exact(enc, {"aead", "chunk_size", "wrap", "recipients"}, "encryption ")
    if enc["aead"] != _stream.AEAD_ID or enc["wrap"] != _kem.SUITE_ID:
        raise FormatError("manifest encryption uses an unknown cipher suite")
    chunk = _size(enc["chunk_size"], "encryption.chunk_size")
    if not _stream.MIN_CHUNK <= chunk <= _stream.MAX_CHUNK:
        raise FormatError("manifest encryption.chunk_size is out of range")
    recips = enc["recipients"]
    if not isinstance(recips, list) or not 1 <= len(recips) <= MAX_RECIPIENTS:
        raise FormatError(f"manifest encryption needs 1 to {MAX_RECIPIENTS} recipients")
    ids = [_hex(_exact(r, {"keyid", "wrapped"}, "recipient ")["keyid"], "recipient keyid") for r in recips]
    if len(set(ids)) != len(ids):
        raise FormatError("manifest lists a recipient twice")


def _check_files(files: Any, enc: dict | None, critical: list) -> None:
    if not isinstance(files, list) or len(files) > MAX_FILES:
        raise LimitError(f"manifest files must be a list of at most {MAX_FILES}")
    paths, folded = [], set()
    for f in files:
        _exact(f, {"path", "size", "sha256", "stored"}, "file ")
        path = check_relpath(f["path"], what="manifest path")
        size = _size(f["size"], f"size of {path}")
        _hex(f["sha256"], f"sha256 of {path}")
        stored = f["stored"]
        sharded = isinstance(stored, dict) and SHARDS in stored
        _exact(stored, {"size", "sha256", SHARDS} if sharded else {"size", "sha256"}, f"stored of {path} ")
        ssize = _size(stored["size"], f"stored size of {path}")
        _hex(stored["sha256"], f"stored sha256 of {path}")
        if sharded and enc is None:  # verify would then never check the plaintext digest
            raise FormatError(f"unencrypted file {path} has a sharded digest; only encrypted entries may")
        if sharded:
            _check_shards(stored, path, critical)
        if enc is None and stored != {"size": size, "sha256": f["sha256"]}:
            raise FormatError(f"unencrypted file {path} must be stored as-is")
        if enc is not None and ssize != _stream.stored_size(size, enc["chunk_size"]):
            raise FormatError(f"stored size of {path} does not match its plaintext size")
        if casefold_key(path) in folded:
            raise FormatError(f"manifest lists {path} twice (names compared case-insensitively)")
        folded.add(casefold_key(path))
        paths.append(path)
    if paths != sorted(paths, key=lambda p: p.encode("utf-8")):
        raise FormatError("manifest files are not in canonical (sorted) order")
    _no_file_folder_clash(folded)


def _check_shards(stored: dict, path: str, critical: list) -> None:
    """``stored.shards``: a shard size, one digest per shard (at least two), and the root in ``sha256``."""
    if SHARDS not in critical:
        raise FormatError(f"stored of {path} is sharded, but the manifest does not list {SHARDS!r} in critical")
    sh = _exact(stored[SHARDS], {"size", "sha256"}, f"stored shards of {path} ")
    shard = _size(sh["size"], f"shard size of {path}")
    if not _shards.MIN_SHARD <= shard <= _shards.MAX_SHARD:
        raise FormatError(f"shard size of {path} is out of range ({_shards.MIN_SHARD} to {_shards.MAX_SHARD} bytes)")
    want = _shards.count(stored["size"], shard)
    if not 2 <= want <= _shards.MAX_SHARDS:
        raise FormatError(f"stored of {path} is sharded but spans {want} shard(s); 2 to {_shards.MAX_SHARDS} allowed")
    digests = sh["sha256"]
    if not isinstance(digests, list) or len(digests) != want:
        raise FormatError(f"stored shards of {path} must list {want} digests, one per shard")
    for d in digests:
        _hex(d, f"shard sha256 of {path}")
    if _shards.root(stored["size"], shard, digests) != stored["sha256"]:
        raise FormatError(f"stored sha256 of {path} is not the root of its shard digests")


def check_signers(signers: Any) -> set[str]:
    """The shape of a signed document's ``signers`` (manifests and route indexes); their key ids."""
    if not isinstance(signers, list) or len(signers) > MAX_SIGNERS:
        raise FormatError(f"signers must be a list of at most {MAX_SIGNERS}")
    seen = set()
    for s in signers:
        _exact(s, {"keyid", "name", "version", "signed_at", "public", "lineage"}, "signer ")
        if _hex(s["keyid"], "signer keyid") in seen:
            raise FormatError("a signer is named twice")
        seen.add(s["keyid"])
        if not isinstance(s["name"], str) or not is_int(s["version"]) or s["version"] < 1:
            raise FormatError("a signer needs a name and a version >= 1")
        clock.parse(s["signed_at"], what="signer signed_at")
    return seen


def _check_custody(custody: Any, signer_ids: set[str]) -> None:
    """Optional ``custody``: for each signer key id, where each half of the key is held."""
    if custody is None:
        return
    if not isinstance(custody, dict) or set(custody) != signer_ids:
        raise FormatError("manifest custody must name exactly the signers' key ids")
    for held in custody.values():
        if not isinstance(held, dict) or set(held) != set(SIGNATURE_POLICY["algorithms"]) or \
                any(v not in CUSTODIES for v in held.values()):
            raise FormatError(f"manifest custody entries map ed25519 and ml-dsa-65 to one of: {', '.join(CUSTODIES)}")


def _no_file_folder_clash(folded: set[str]) -> None:
    """``a`` and ``a/b`` cannot both be files: one would have to be a folder."""
    for path in folded:
        parts = path.split("/")
        for i in range(1, len(parts)):
            if "/".join(parts[:i]) in folded:
                raise FormatError(f"manifest lists {'/'.join(parts[:i])!r} both as a file and as a folder")


def entry_names(m: dict) -> list[str]:
    """The archive's entries, in the one canonical order."""
    return [PAYLOAD_PREFIX + f["path"] for f in m["files"]] + [EVIDENCE_ENTRY, PROVENANCE_ENTRY, ENVELOPE_ENTRY]


def expected_digests(m: dict) -> dict[str, tuple[int, str]]:
    """Each entry's stored size and SHA-256 (for a sharded entry, the root: see ``shards_of``)."""
    out = {PAYLOAD_PREFIX + f["path"]: (f["stored"]["size"], f["stored"]["sha256"]) for f in m["files"]}
    out[EVIDENCE_ENTRY] = (m["evidence"]["size"], m["evidence"]["sha256"])
    out[PROVENANCE_ENTRY] = (m["provenance"]["size"], m["provenance"]["sha256"])
    return out


def shards_of(stored: dict) -> tuple[int, tuple[str, ...]] | None:
    """A validated ``stored`` object's shard size and digests, or None for a single digest."""
    sh = stored.get(SHARDS)
    return (sh["size"], tuple(sh["sha256"])) if sh else None
