"""Safe extraction: verify, then decrypt into a private folder, then rename.

Nothing reaches the destination unless every file decrypted, matched both
of its digests, and was fsynced. The stored bytes are hashed again while
they are decrypted, so a package changed between verification and
extraction is caught too.
"""

from __future__ import annotations

import functools
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from . import _stream, archive, manifest as mf
from ._pump import pump
from .atomic import fsync_tree, prepare_parent, private_dir, write_all
from .canonical import b64d
from .errors import DecryptionError, DigestError, FormatError, InputError, NotARecipientError, OutputError
from .keys import RECIPIENT
from .package import DEFAULT_LIMITS, IO_BLOCK, Limits, Package
from .signing import Identity, TrustPolicy
from .verify import Check, VerifyReport, verify

_OPEN_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)


@dataclass(frozen=True)
class UnpackResult:
    path: Path
    report: VerifyReport
    files: int
    bytes: int


def unpack(
    path: str | os.PathLike,
    out_dir: str | os.PathLike,
    policy: TrustPolicy,
    *,
    identities: list[Identity] | None = None,
    limits: Limits = DEFAULT_LIMITS,
    progress: Callable[[int], None] | None = None,
) -> UnpackResult:
    out = Path(out_dir)
    _check_output(out)
    # Every check but the payload hashes, which happen while extracting: one
    # pass over the payload, and nothing reaches `out` before all of it matched.
    report = verify(path, policy, limits=limits, payload_digests=False)
    report.raise_for_failure()
    m = report.manifest
    file_key = _file_key(m, identities or [])
    need = sum(f["size"] for f in m["files"])
    parent = prepare_parent(out)
    if shutil.disk_usage(parent).free < need:
        raise OutputError(f"not enough free space in {parent}: need {need} bytes")
    with private_dir(out) as tmp, open(path, "rb") as f:
        # Re-index: the same canonical checks as verify, against this handle.
        pkg = Package(f, str(path), limits)
        if pkg.package_id != report.package_id:
            raise DigestError("package changed after it was verified")
        try:
            with _Unnamed(tmp, len(m["files"])) as files:
                for entry_meta in m["files"]:
                    _extract_one(pkg, entry_meta, tmp, file_key, m, progress, files)
                files.name_all()  # only now does any plaintext have a name (and so survive a kill -9)
            fsync_tree(tmp)
        except OSError as exc:
            raise OutputError(f"cannot write into {parent}: {exc.strerror or exc}",
                              hint="check free space and permissions of the output folder") from None
        report.checks = [Check("digests", "ok", f"{len(m['files'])} files, {need} bytes: stored and plaintext SHA-256 "
                               f"match; id {report.package_id}") if c.name == "digests" else c for c in report.checks]
        _check_output(out)  # still free: nothing appeared there meanwhile
        if out.exists():
            out.rmdir()  # empty, checked above
        os.replace(tmp, out)
    return UnpackResult(out, report, len(m["files"]), need)


def _check_output(out: Path) -> None:
    if out.is_symlink():
        raise InputError(f"output {out} is a symbolic link; refusing to extract through it", hint="give the real path")
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise InputError(f"{out} exists and is not an empty folder", hint="choose a new output folder")


def _file_key(m: dict, identities: list[Identity]) -> bytes | None:
    enc = m.get("encryption")
    if enc is None:
        return None
    if not identities:
        raise InputError("package is encrypted; give a recipient key to decrypt it",
                         hint="pass --identity NAME (a recipient key in your keyring)")
    by_id = {r["keyid"]: r["wrapped"] for r in enc["recipients"]}
    for ident in identities:
        if ident.kind != RECIPIENT:
            continue
        wrapped = by_id.get(ident.keyid)
        if wrapped is not None:
            return ident.unwrap(b64d(wrapped, what="wrapped key"))
    raise NotARecipientError([i.keyid for i in identities if i.kind == RECIPIENT], list(by_id))


def read_payload(
    path: str | os.PathLike,
    policy: TrustPolicy,
    *,
    identities: list[Identity] | None = None,
    limits: Limits = DEFAULT_LIMITS,
    max_bytes: int = 4 << 30,
) -> tuple[VerifyReport, dict[str, bytes]]:
    """Verify, then decrypt every payload file into memory (never to disk).

    For adapters and keys that are applied in-process (``peft generate``, warm
    starts, evaluations, a shared HE secret). In the order of format.md §8: every
    stored digest is compared before anything is decrypted; while decrypting, each
    file's stored and plaintext digests are checked again as ``unpack`` checks them
    (the file could change in between); ``max_bytes`` caps the total."""
    report = verify(path, policy, limits=limits, payload_digests=True)
    report.raise_for_failure()
    m = report.manifest
    need = sum(f["size"] for f in m["files"])
    if need > max_bytes:
        raise InputError(f"package payload is {need} bytes, over the {max_bytes}-byte limit for reading into memory",
                         hint="unpack it to a folder instead (tgflow tgsp unpack)")
    with PayloadReader(path, report, identities or [], limits) as reader:
        return report, {meta["path"]: reader.read(meta["path"], max_bytes) for meta in m["files"]}


class PayloadReader:
    """A verified package held open, whose payload files decrypt into memory one at a time.

    For callers that stream many packages file by file (federated aggregation), so
    memory holds one file, never a whole package. Every read checks the file's stored
    and plaintext digests exactly as ``unpack`` does; the handle is re-indexed against
    the verified package id, so a file swapped after verification is caught."""

    def __init__(self, path: str | os.PathLike, report: VerifyReport, identities: list[Identity],
                 limits: Limits = DEFAULT_LIMITS) -> None:
        report.raise_for_failure()
        self.report, self.manifest = report, report.manifest
        self.key = _file_key(self.manifest, identities)
        self.files = {f["path"]: f for f in self.manifest["files"]}
        self._f = open(path, "rb")
        try:
            self._pkg = Package(self._f, str(path), limits)
            if self._pkg.package_id != report.package_id:
                raise DigestError("package changed after it was verified")
        except BaseException:
            self._f.close()
            raise

    def read(self, rel: str, max_bytes: int = 1 << 30) -> bytes:
        meta = self.files.get(rel)
        if meta is None:
            raise InputError(f"{self.report.path} has no payload file {rel}")
        if meta["size"] > max_bytes:
            raise InputError(f"{rel} in {self.report.path} is {meta['size']} bytes, over the {max_bytes}-byte limit")
        buf = bytearray()
        _pump_entry(self._pkg, meta, self.key, self.manifest, buf.extend, None)
        if len(buf) != meta["size"]:
            raise DecryptionError()
        return bytes(buf)

    def extract_into(self, root: Path) -> None:
        """Every payload file decrypted into ``root`` (an empty private folder), as ``unpack``
        writes them: unnamed until all are written and checked, so a SIGKILL leaves no
        plaintext with a name, then named and synced."""
        with _Unnamed(root, len(self.manifest["files"])) as files:
            for meta in self.manifest["files"]:
                _extract_one(self._pkg, meta, root, self.key, self.manifest, None, files)
            files.name_all()
        fsync_tree(root)

    def close(self) -> None:
        self._f.close()

    def __enter__(self) -> PayloadReader:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class _Unnamed:
    """Decrypted files are written without a name (Linux O_TMPFILE) and named all at once at
    the end, so a SIGKILL mid-unpack leaves no plaintext on disk: the kernel frees an unnamed
    file when its last descriptor closes. Where the filesystem cannot (or for more files
    than MAX_UNNAMED descriptors), files are named as they are written, in the private
    folder, which the next unpack into that parent removes."""

    MAX_UNNAMED = 256

    def __init__(self, root: Path, count: int) -> None:
        self.root, self.pending = root, []
        self.enabled = count <= self.MAX_UNNAMED and self._works(root)

    @staticmethod
    def _works(root: Path) -> bool:
        """Whether this filesystem makes unnamed files and can name them later (overlay and
        network filesystems often cannot): tried once, on an empty file."""
        if not hasattr(os, "O_TMPFILE") or not os.path.isdir("/proc/self/fd"):
            return False
        probe = root / ".tgflow-probe"
        try:
            fd = os.open(root, os.O_TMPFILE | os.O_WRONLY | getattr(os, "O_CLOEXEC", 0), 0o600)
        except OSError:
            return False
        try:
            _link(fd, probe)
            probe.unlink()
            return True
        except OSError:
            return False
        finally:
            os.close(fd)

    def __enter__(self) -> _Unnamed:
        return self

    def __exit__(self, *exc) -> None:
        for fd, _ in self.pending:
            os.close(fd)
        self.pending = []

    def open(self, target: Path) -> tuple[int, bool]:
        """A descriptor to write ``target``'s bytes to, and whether it is still unnamed."""
        if self.enabled:
            try:
                return os.open(target.parent, os.O_TMPFILE | os.O_WRONLY | getattr(os, "O_CLOEXEC", 0), 0o644), True
            except OSError:  # this filesystem has no O_TMPFILE: name files as they are written
                self.enabled = False
        return os.open(target, _OPEN_FLAGS, 0o644), False

    def keep(self, fd: int, target: Path) -> None:
        self.pending.append((fd, target))

    def name_all(self) -> None:
        for fd, target in self.pending:
            _link(fd, target)


def _link(fd: int, target: Path) -> None:
    """Give an unnamed file a name: linkat(AT_EMPTY_PATH) where the kernel allows it (it needs
    CAP_DAC_READ_SEARCH on older kernels), else linkat through /proc/self/fd (open(2))."""
    libc = _libc()
    if libc is not None and libc.linkat(fd, b"", -100, os.fsencode(target), 0x1000) == 0:  # AT_FDCWD, AT_EMPTY_PATH
        return
    os.link(f"/proc/self/fd/{fd}", target, follow_symlinks=True)


@functools.lru_cache(maxsize=1)
def _libc():
    import ctypes  # here, not at import: tgsp verify starts without it

    try:
        return ctypes.CDLL(None, use_errno=True)
    except OSError:  # pragma: no cover - no C library to call
        return None


def _extract_one(pkg: Package, meta: dict, root: Path, file_key: bytes | None, m: dict,
                 progress: Callable[[int], None] | None, files: _Unnamed) -> None:
    rel = meta["path"]
    target = root.joinpath(*rel.split("/"))
    target.parent.mkdir(parents=True, exist_ok=True)
    if not target.parent.resolve().is_relative_to(root.resolve()):
        raise OutputError(f"refusing to write {rel} outside the output folder")
    fd, unnamed = files.open(target)
    if unnamed:
        files.keep(fd, target)  # closed by ``files``, after it is named
    out = os.fdopen(fd, "wb", buffering=0, closefd=not unnamed)
    with out:
        _pump_entry(pkg, meta, file_key, m, lambda v: write_all(out, v), progress)
        os.fsync(out.fileno())
        size = os.fstat(out.fileno()).st_size
    if size != meta["size"]:
        raise DecryptionError()


def _pump_entry(pkg: Package, meta: dict, file_key: bytes | None, m: dict, write: Callable[[memoryview], None],
                progress: Callable[[int], None] | None) -> None:
    """Stream one payload entry through decryption into ``write``, checking both digests."""
    rel = meta["path"]
    entry = pkg.entry(mf.PAYLOAD_PREFIX + rel)
    transform, chunk, overhead = None, IO_BLOCK, 0
    if file_key is not None:
        chunk, overhead = m["encryption"]["chunk_size"] + _stream.TAG, -_stream.TAG
        cipher = _stream.file_cipher(file_key, rel)
        try:
            _stream.plain_size_of(entry.size, chunk - _stream.TAG)
        except ValueError:
            raise DecryptionError() from None

        def transform(index: int, last: bool, vin: memoryview, vout: memoryview) -> None:
            try:
                cipher.decrypt_into(_stream.nonce(index, last), vin, None, vout)
            except Exception:
                raise DecryptionError() from None

    sharded = mf.shards_of(meta["stored"])
    pkg.f.seek(entry.data_offset)
    try:
        stored, plain = pump(pkg.f, entry.size, chunk, write, transform=transform, overhead=overhead,
                             progress=progress, shards=(sharded[0] if sharded else None, None))
    except FormatError:
        raise DigestError(f"{rel} is truncated") from None
    if (stored.root if sharded else stored) != meta["stored"]["sha256"]:
        raise DigestError(f"{rel} does not match its SHA-256 in the manifest")
    if plain != meta["sha256"]:
        raise DecryptionError()
