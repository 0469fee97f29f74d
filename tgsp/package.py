"""An opened TGSP package: its entries, its signed envelope and manifest, and the
format checks that need nothing but the package itself (entry list, digests, evidence).
Building is builder.py; trust (signatures, expiry, rollback) is verify.py.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Callable

from . import _shards, archive, dsse, evidence, manifest as mf
from .atomic import write_all
from .canonical import parse, sha256_hex
from .errors import (DigestError, EntryListError, EvidenceError, FormatError, InputError, LimitError, NotFoundError,
                     OutputError)

IO_BLOCK = 4 << 20


def package_id(manifest_bytes: bytes) -> str:
    return "sha256:" + sha256_hex(manifest_bytes)


@dataclass(frozen=True)
class Limits:
    max_entry: int = 1 << 40  # 1 TiB per payload file
    max_envelope: int = 16 << 20
    max_evidence: int = 64 << 20
    max_provenance: int = 16 << 20


DEFAULT_LIMITS = Limits()


class Package:
    """An opened package whose format has been checked. Use as a context manager."""

    def __init__(self, f: BinaryIO, path: str, limits: Limits) -> None:
        self.f, self.path, self.limits = f, path, limits
        fd = _shards.plain_fd(f)
        size = os.fstat(fd).st_size if fd is not None else _len(f)
        self.entries = archive.index(f, max_entries=mf.MAX_FILES + 3, max_entry_size=limits.max_entry, file_size=size)
        self._by_name = {}
        for e in self.entries:
            if e.name in self._by_name:
                raise EntryListError(f"entry {e.name!r} appears twice")
            self._by_name[e.name] = e
        if not self.entries or self.entries[-1].name != mf.ENVELOPE_ENTRY:
            raise FormatError(f"package does not end with {mf.ENVELOPE_ENTRY}")
        for name, cap in ((mf.ENVELOPE_ENTRY, limits.max_envelope), (mf.EVIDENCE_ENTRY, limits.max_evidence),
                          (mf.PROVENANCE_ENTRY, limits.max_provenance)):
            e = self._by_name.get(name)
            if e is not None and e.size > cap:
                raise LimitError(f"{name} is {e.size} bytes, over the {cap}-byte limit")
        env_obj = parse(archive.read_entry(f, self.entries[-1]), what="envelope", canonical=True)
        self.envelope = dsse.parse(env_obj, expect_type=dsse.MANIFEST_TYPE)
        self.manifest = mf.validate(parse(self.envelope.payload, what="manifest", canonical=True))
        self.package_id = "sha256:" + sha256_hex(self.envelope.payload)

    def __enter__(self) -> Package:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self.f.close()

    def entry(self, name: str) -> archive.Entry:
        e = self._by_name.get(name)
        if e is None:
            raise EntryListError(f"package has no {name} entry")
        return e

    def read(self, name: str) -> bytes:
        return archive.read_entry(self.f, self.entry(name))

    @property
    def evidence(self) -> list[dict[str, Any]]:
        return evidence.parse_jsonl(self.read(mf.EVIDENCE_ENTRY))

    @property
    def provenance_bytes(self) -> bytes:
        return self.read(mf.PROVENANCE_ENTRY)

    @property
    def provenance(self) -> Any:
        return parse(self.provenance_bytes, what="provenance", canonical=True)

    def copy_prefix(self, dst: BinaryIO, length: int) -> None:
        copy_range(self.f, dst, length)

    # --- checks ------------------------------------------------------------
    def check_entries(self) -> str:
        want, have = mf.entry_names(self.manifest), [e.name for e in self.entries]
        if want == have:
            return f"{len(have)} entries, all listed, in canonical order"
        extra = [n for n in have if n not in want]
        missing = [n for n in want if n not in have]
        if extra:
            raise EntryListError(f"entry {extra[0]!r} is not listed in the manifest")
        if missing:
            raise EntryListError(f"entry {missing[0]!r} is listed in the manifest but missing")
        raise EntryListError("entries are not in the manifest's canonical order")

    def check_digests(self, progress: Callable[[int], None] | None = None, *, payload: bool = True) -> str:
        """Hash every entry against the manifest. With ``payload=False`` only
        sizes are checked for payload files (the caller hashes them as it reads)."""
        for name, (size, _) in mf.expected_digests(self.manifest).items():
            if self.entry(name).size != size:
                raise DigestError(f"{name} is {self.entry(name).size} bytes; the manifest says {size}")
        # metadata entries are hashed by the evidence check, before they are parsed
        if not payload:
            return f"payload sizes match; payload digests are checked while extracting; id {self.package_id}"
        buf, total = bytearray(IO_BLOCK), 0
        for f in self.manifest["files"]:
            name = mf.PAYLOAD_PREFIX + f["path"]
            self._check_stored(self.entry(name), name, f["stored"], buf, progress)
            total += f["stored"]["size"]
        return f"{len(self.manifest['files'])} files, {total} bytes, SHA-256 match; id {self.package_id}"

    def _check_stored(self, e: archive.Entry, name: str, stored: dict, buf: bytearray,
                      progress: Callable[[int], None] | None) -> None:
        sharded = mf.shards_of(stored)
        if sharded is None:
            h = hashlib.sha256()
            for chunk in archive.iter_entry(self.f, e, buf):
                h.update(chunk)
                if progress:
                    progress(len(chunk))
            if h.hexdigest() != stored["sha256"]:
                raise DigestError(f"{name} does not match its SHA-256 in the manifest")
            return
        shard, want = sharded
        got = _shards.hash_region(self.f, e.data_offset, e.size, shard, progress=progress).shards
        bad = next((i for i, (a, b) in enumerate(zip(got, want)) if a != b), None)
        if bad is not None:
            lo, hi = bad * shard, min((bad + 1) * shard, e.size) - 1
            raise DigestError(f"{name} shard {bad} (bytes {lo}-{hi}) does not match its SHA-256 in the manifest")

    def _metadata(self, name: str, field: str) -> bytes:
        """An entry's bytes, only once their size and SHA-256 match the signed manifest."""
        want = self.manifest[field]
        if self.entry(name).size != want["size"]:
            raise DigestError(f"{name} is {self.entry(name).size} bytes; the manifest says {want['size']}")
        data = self.read(name)
        if sha256_hex(data) != want["sha256"]:
            raise DigestError(f"{name} does not match its SHA-256 in the manifest")
        return data

    def check_evidence(self) -> str:
        records = evidence.parse_jsonl(self._metadata(mf.EVIDENCE_ENTRY, "evidence"))
        ev = self.manifest["evidence"]
        if evidence.head_of(records) != ev["head"] or len(records) != ev["count"]:
            raise EvidenceError("evidence chain head does not match the manifest")
        prov = parse(self._metadata(mf.PROVENANCE_ENTRY, "provenance"), what="provenance", canonical=True)
        evidence.check_provenance(prov, self.manifest["files"])
        return f"{len(records)} events, head {ev['head'][:16]}; provenance subjects match the manifest"


def _len(f) -> int:
    pos = f.seek(0, 2)
    f.seek(0)
    return pos


def open_package(path: str | os.PathLike | BinaryIO, *, limits: Limits = DEFAULT_LIMITS,
                 check_digests: bool = False) -> Package:
    """Open and format-check a package (a path or a seekable binary file)."""
    if isinstance(path, (str, os.PathLike)):
        p = Path(path)
        if not p.exists():
            raise NotFoundError(f"package {p} does not exist")
        if not p.is_file():
            raise InputError(f"{p} is not a regular file")
        f, label = open(p, "rb"), str(p)
    else:
        f, label = path, "<stream>"
    try:
        pkg = Package(f, label, limits)
        if check_digests:
            pkg.check_entries()
            pkg.check_digests()
            pkg.check_evidence()
        return pkg
    except BaseException:
        f.close()
        raise


def copy_range(src: BinaryIO, dst: BinaryIO, length: int) -> None:
    """Copy ``length`` bytes from the start of ``src``: in-kernel where possible."""
    src.seek(0)
    dst.flush()
    left = length
    try:
        while left:
            n = os.copy_file_range(src.fileno(), dst.fileno(), left)
            if n == 0:
                raise OutputError("package shrank while it was being copied")
            left -= n
        return
    except (AttributeError, OSError) as exc:
        if isinstance(exc, OutputError):
            raise
    src.seek(length - left)
    while left:
        data = src.read(min(IO_BLOCK, left))
        if not data:
            raise FormatError("package is truncated")
        write_all(dst, data)
        left -= len(data)
