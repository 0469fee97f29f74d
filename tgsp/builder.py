"""Building and signing TGSP packages (the thin I/O shell over the pure core).

Layout of a package (a canonical ustar archive, see ``archive``):

    payload/<path>...   every file, sorted; AEAD-streamed when encrypted
    evidence.jsonl      the hash-chained evidence events
    provenance.json     an in-toto Statement v1 (SLSA provenance v1)
    envelope.json       DSSE envelope; its payload is the canonical manifest

Payload bytes are streamed in chunks: memory stays flat for any size.
"""

from __future__ import annotations

import io
import os
import stat
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Callable, Sequence

from . import _kem, _shards, _stream, archive, clock, dsse, evidence, manifest as mf
from ._pump import pump
from .atomic import DropBehind, atomic_file
from .canonical import b64e, encode, sha256_hex
from .errors import FormatError, InputError, NotFoundError, SignatureError, UnsafeEntryError, UnsafeSourceError
from .keys import RECIPIENT, PublicKey
from .package import IO_BLOCK, open_package, package_id
from .paths import casefold_key, check_relpath
from .signing import Signer, sign_manifest
from .version import TOOL

BUILDER_ID = "https://tgflow.dev/builder/tgflow-cli"
Progress = Callable[[int], None]


@dataclass(frozen=True)
class SourceFile:
    path: str  # the package path (relative, '/'-separated)
    source: Path
    size: int
    data: bytes | None = None  # in memory instead of ``source``: a secret that must never touch disk


@dataclass(frozen=True)
class BuildResult:
    path: Path
    package_id: str
    manifest: dict[str, Any]


def collect(src: str | os.PathLike) -> list[SourceFile]:
    """List the regular files under ``src``; refuse links and special files."""
    root = Path(src)
    if not root.exists():
        raise NotFoundError(f"source folder {root} does not exist")
    if not root.is_dir():
        raise InputError(f"{root} is not a folder", hint="tgsp build takes a folder (e.g. a PEFT adapter folder)")
    out: list[SourceFile] = []

    def walk(folder: Path, prefix: str) -> None:
        with os.scandir(folder) as it:
            for item in it:
                rel = prefix + item.name
                st = item.stat(follow_symlinks=False)
                if stat.S_ISLNK(st.st_mode):
                    raise UnsafeSourceError(f"{rel} is a symbolic link; packages hold regular files only",
                                           hint="copy the file it points to into the folder instead")
                if stat.S_ISDIR(st.st_mode):
                    walk(Path(item.path), rel + "/")
                elif stat.S_ISREG(st.st_mode):
                    out.append(SourceFile(_source_name(rel), Path(item.path), st.st_size))
                else:
                    raise UnsafeSourceError(f"{rel} is not a regular file (device, FIFO or socket)",
                                            hint="packages hold regular files only; move it out of the folder")

    walk(root, "")
    out.sort(key=lambda f: f.path.encode("utf-8"))
    folded: dict[str, str] = {}
    for f in out:
        other = folded.setdefault(casefold_key(f.path), f.path)
        if other != f.path:
            raise UnsafeSourceError(f"{other} and {f.path} differ only in case; they would collide on unpack",
                                    hint="rename one of them")
    if len(out) > mf.MAX_FILES:
        raise InputError(f"{root} has {len(out)} files; a package holds at most {mf.MAX_FILES}")
    return out


def in_memory(files: dict[str, bytes]) -> list[SourceFile]:
    """``collect`` for files held in memory (a decrypted adapter must never touch disk)."""
    out = sorted((SourceFile(_source_name(n), Path(), len(d), bytes(d)) for n, d in files.items()),
                 key=lambda f: f.path.encode("utf-8"))
    if len({casefold_key(f.path) for f in out}) != len(out):
        raise UnsafeSourceError("two file names differ only in case; they would collide on unpack")
    return out


def _source_name(rel: str) -> str:
    try:
        return check_relpath(rel, what="file name")
    except UnsafeEntryError as exc:
        raise UnsafeSourceError(str(exc), hint="rename it: names must be NFC, without control or reserved "
                                               "characters, at most 240 bytes") from None


def _stream_file(src: SourceFile, w: archive.Writer, cipher, chunk: int, shard_size: int,
                 progress: Progress | None) -> dict[str, Any]:
    """Copy one file into the archive, encrypting when there is a cipher; a stored
    entry over one shard gets a sharded digest (verify hashes its shards in parallel)."""
    transform = None
    if cipher is not None:
        def transform(index: int, last: bool, vin: memoryview, vout: memoryview) -> None:
            cipher.encrypt_into(_stream.nonce(index, last), vin, None, vout)
    stored_size = _stream.stored_size(src.size, chunk) if cipher else src.size
    # Encrypted entries only: the plaintext digest is then checked as the bytes are decrypted.
    shard = shard_size if cipher is not None and stored_size > shard_size else None
    if shard and _shards.count(stored_size, shard) > _shards.MAX_SHARDS:
        raise InputError(f"{src.path} would need more than {_shards.MAX_SHARDS} shards of {shard} bytes",
                         hint="use a larger shard size")
    w.begin(mf.PAYLOAD_PREFIX + src.path, stored_size)
    with (io.BytesIO(src.data) if src.data is not None else open(src.source, "rb", buffering=0)) as f:
        try:
            plain, stored = pump(f, src.size, chunk if cipher else IO_BLOCK, w.write, transform=transform,
                                 overhead=_stream.TAG if cipher else 0, progress=progress, shards=(None, shard))
        except FormatError:
            raise InputError(f"{src.path} changed while it was being packed") from None
        if f.read(1):
            raise InputError(f"{src.path} changed while it was being packed")
    w.end()
    kept = stored.as_stored(stored_size) if shard else {"size": stored_size, "sha256": stored}
    return {"path": src.path, "size": src.size, "sha256": plain, "stored": kept}


def _stream_files(m: dict[str, Any], files: list[SourceFile], w: archive.Writer, file_key: bytes | None,
                  chunk_size: int, shard_size: int, progress: Progress | None) -> None:
    m["files"] = [
        _stream_file(s, w, _stream.file_cipher(file_key, s.path) if file_key else None, chunk_size, shard_size,
                     progress)
        for s in files
    ]
    if any(mf.SHARDS in f["stored"] for f in m["files"]):  # older readers then say what they lack
        m["critical"] = sorted(set(m.get("critical", [])) | {mf.SHARDS})


def _finish(w: archive.Writer, m: dict[str, Any], records: list[dict], prov: bytes, signers: Sequence[Signer]) -> str:
    ev = evidence.encode_jsonl(records)
    m["evidence"] = {"size": len(ev), "sha256": sha256_hex(ev), "head": evidence.head_of(records), "count": len(records)}
    m["provenance"] = {"size": len(prov), "sha256": sha256_hex(prov)}
    payload = encode(mf.validate(m))
    env = dsse.Envelope(dsse.MANIFEST_TYPE, payload, tuple(sign_manifest(payload, signers)))
    w.add(mf.EVIDENCE_ENTRY, ev)
    w.add(mf.PROVENANCE_ENTRY, prov)
    w.add(mf.ENVELOPE_ENTRY, encode(env.to_dict()))
    w.close()
    return package_id(payload)


def _check_args(started: datetime, expires: datetime | None, recipients: Sequence[PublicKey], chunk_size: int,
                signers: Sequence[Signer], shard_size: int) -> None:
    if not _shards.MIN_SHARD <= shard_size <= _shards.MAX_SHARD:
        raise InputError(f"shard size must be between {_shards.MIN_SHARD} and {_shards.MAX_SHARD} bytes")
    if len({s.keyid for s in signers}) != len(signers):
        raise InputError("the same signing key is named twice", hint="name each --sign key once")
    if expires is not None and expires <= started:
        raise InputError(f"expiry {clock.fmt(expires)} is not in the future (now {clock.fmt(started)})",
                         hint="give a later --expires")
    if any(r.kind != RECIPIENT for r in recipients):
        raise InputError("recipients must be recipient keys (X25519 + ML-KEM-768)")
    if len({r.keyid for r in recipients}) != len(recipients):
        raise InputError("the same recipient is named twice")
    if not _stream.MIN_CHUNK <= chunk_size <= _stream.MAX_CHUNK:
        raise InputError(f"chunk size must be between {_stream.MIN_CHUNK} and {_stream.MAX_CHUNK}")


def _encryption(file_key: bytes, recipients: Sequence[PublicKey], chunk_size: int) -> dict[str, Any]:
    """The manifest's encryption header: the file key wrapped to each recipient, by key id."""
    return {"aead": _stream.AEAD_ID, "chunk_size": chunk_size, "wrap": _kem.SUITE_ID,
            "recipients": sorted(({"keyid": r.keyid, "wrapped": b64e(_kem.wrap(file_key, r.public))}
                                  for r in recipients), key=lambda r: r["keyid"])}


def build(
    src: str | os.PathLike,
    out: str | os.PathLike,
    *,
    route: str = "default",
    version: int = 0,
    kind: str = "files",
    recipients: Sequence[PublicKey] = (),
    signers: Sequence[Signer] = (),
    events: Sequence[dict[str, Any]] = (),
    expires: datetime | None = None,
    chunk_size: int = _stream.DEFAULT_CHUNK,
    external: dict[str, Any] | None = None,
    dependencies: list[dict[str, Any]] | None = None,
    extra: dict[str, Any] | None = None,
    now: clock.Clock = clock.utcnow,
    progress: Progress | None = None,
    files: list[SourceFile] | None = None,
    overwrite: bool = True,
    shard_size: int = _shards.SHARD_SIZE,
) -> BuildResult:
    """Pack ``src`` into a package at ``out`` (atomically). ``files`` is
    ``collect(src)`` when the caller already has it (to size a progress bar);
    ``overwrite=False`` refuses an existing ``out``; a stored file over
    ``shard_size`` bytes gets a sharded digest."""
    files = collect(src) if files is None else files
    started = now()
    mf.check_fields(route, kind, version)
    _check_args(started, expires, recipients, chunk_size, signers, shard_size)
    m: dict[str, Any] = dict(extra or {})
    m.update({"format": mf.FORMAT, "kind": kind, "route": route, "version": version,
              "created": clock.fmt(started), "signature_policy": mf.SIGNATURE_POLICY})
    if expires is not None:
        m["expires"] = clock.fmt(expires)
    file_key = os.urandom(32) if recipients else None
    if file_key:
        m["encryption"] = _encryption(file_key, recipients, chunk_size)
    with atomic_file(out, overwrite=overwrite) as f:
        w = archive.Writer(DropBehind(f))
        _stream_files(m, files, w, file_key, chunk_size, shard_size, progress)
        finished = now()
        _events_before(events, finished)
        # Chain order is time order: what happened before the build (a round's
        # events, --evidence), then the build, then the signatures.
        bodies = list(events) + [evidence.event("tgflow.build", {
            "tool": TOOL, "files": len(files), "bytes": sum(s.size for s in files),
            "encrypted": bool(recipients), "recipients": [r.keyid for r in recipients],
        }, finished)]
        bodies += [_sign_event(s, finished) for s in signers]
        records = evidence.append([], bodies)
        m["signers"] = [s.manifest_entry(finished) for s in signers]
        m["custody"] = {s.keyid: s.custody for s in signers}
        prov = encode(evidence.provenance_statement(
            m["files"], builder=BUILDER_ID, started=started, finished=finished,
            external={"route": route, "version": version, "kind": kind, **(external or {})},
            dependencies=dependencies))
        pid = _finish(w, m, records, prov, signers)
    return BuildResult(Path(out), pid, m)


def sign(path: str | os.PathLike, signer: Signer, *, out: str | os.PathLike | None = None,
         now: clock.Clock = clock.utcnow) -> BuildResult:
    """Add ``signer``'s signature, or replace it if the manifest names it.

    Checks the package's integrity first: nobody should sign damaged bytes.
    Adding a new signer changes the manifest (signer list, sign event), which
    would void other signers' signatures, so that is refused when any exist.
    """
    with open_package(path, check_digests=True) as pkg:
        return _sign_open(pkg, signer, Path(out or path), now)


def _sign_open(pkg, signer: Signer, out: Path, now: clock.Clock) -> BuildResult:
    m, env = pkg.manifest, pkg.envelope
    if any(s["keyid"] == signer.keyid for s in m["signers"]):
        mine = set(signer.public.component_ids().values())
        kept = [(k, s) for k, s in env.signatures if k not in mine]
        new_env = dsse.Envelope(env.payload_type, env.payload, tuple(kept + sign_manifest(env.payload, [signer])))
        with atomic_file(out) as f:
            pkg.copy_prefix(f, pkg.entries[-1].header_offset)
            w = archive.Writer(f)
            w.add(mf.ENVELOPE_ENTRY, encode(new_env.to_dict()))
            w.close()
        return BuildResult(out, package_id(env.payload), m)
    if env.signatures:
        names = ", ".join(s["name"] for s in m["signers"])
        raise SignatureError(f"package is already signed by {names}; a new signer would void those signatures",
                             hint="build with every --sign at once, or re-sign with the same key")
    when = now()
    records = evidence.append(pkg.evidence, [_sign_event(signer, when)])
    m = dict(m)
    m["signers"] = list(m["signers"]) + [signer.manifest_entry(when)]
    m["custody"] = {**(m.get("custody") or {}), signer.keyid: signer.custody}
    with atomic_file(out) as f:
        ev_entry = pkg.entry(mf.EVIDENCE_ENTRY)
        pkg.copy_prefix(f, ev_entry.header_offset)
        pid = _finish(archive.Writer(f), m, records, pkg.provenance_bytes, [signer])
    return BuildResult(out, pid, m)


def _events_before(events: Sequence[dict[str, Any]], finished: datetime) -> None:
    last = None
    for n, e in enumerate(events):
        when = clock.parse(e["time"], what="evidence event time")
        if when > finished or (last is not None and when < last):
            raise InputError(f"evidence event {n} ({e['type']}) is dated {e['time']}: events must be in time order "
                             f"and not after the build ({clock.fmt(finished)})")
        last = when


def _sign_event(s: Signer, when: datetime) -> dict[str, Any]:
    return evidence.event("tgflow.sign", {"keyid": s.keyid, "name": s.name, "version": s.version,
                                          "custody": s.custody}, when)
