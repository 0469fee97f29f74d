"""Sharded SHA-256 of large stored entries (private helper; format.md §3.1, ADR 0018).

One SHA-256 over a whole file runs on one core, however many there are. A large
stored entry is therefore described by the digests of its fixed-size shards and
a root over them; a verifier hashes the shards on every core it has. Each worker
reads its shard with ``pread`` into its own 1 MiB buffer, so memory stays
bounded by workers x 1 MiB whatever the file's size (no mmap: mapped pages would
count against the process's memory, and a truncated file would fault).
"""

from __future__ import annotations

import hashlib
import io
import os
import stat
import threading
from dataclasses import dataclass
from typing import BinaryIO, Callable

from .errors import FormatError, InputError

SHARD_SIZE = 64 << 20  # what builders write: large enough that a shard's hash dwarfs its scheduling
MIN_SHARD = 4 << 10
MAX_SHARD = 1 << 30
MAX_SHARDS = 1 << 20
_DOMAIN = b"tgsp/1 sharded sha256\x00"
_BLOCK = 1 << 20
_MAX_THREADS = 64


@dataclass(frozen=True)
class Sharded:
    """A sharded digest: the shard size, each shard's SHA-256 (hex) and their root."""
    shard_size: int
    shards: tuple[str, ...]
    root: str

    def as_stored(self, size: int) -> dict:
        return {"size": size, "sha256": self.root, "shards": {"size": self.shard_size, "sha256": list(self.shards)}}


def count(size: int, shard_size: int) -> int:
    return -(-size // shard_size)


def root(size: int, shard_size: int, shards: list[str] | tuple[str, ...]) -> str:
    """SHA-256(domain || u64be(size) || u64be(shard size) || raw shard digests, in order)."""
    h = hashlib.sha256(_DOMAIN + size.to_bytes(8, "big") + shard_size.to_bytes(8, "big"))
    for d in shards:
        h.update(bytes.fromhex(d))
    return h.hexdigest()


def threads() -> int:
    """Hashing workers: TGFLOW_HASH_THREADS, else the cores this process may run on."""
    raw = os.environ.get("TGFLOW_HASH_THREADS", "").strip()
    if raw:
        if not (raw.isascii() and raw.isdigit() and len(raw) <= 6 and int(raw) > 0):
            raise InputError(f"TGFLOW_HASH_THREADS={raw[:20]!r} is not a positive whole number",
                             hint="set it to the number of cores to hash with, or unset it")
        return min(int(raw), _MAX_THREADS)
    try:
        n = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # pragma: no cover - not Linux
        n = os.cpu_count() or 1
    return max(1, min(n, _MAX_THREADS))


class Hasher:
    """Streaming sharded digest, fed in order (build and unpack hash while they stream)."""

    def __init__(self, shard_size: int) -> None:
        self.shard_size = shard_size
        self.shards: list[str] = []
        self._h = hashlib.sha256()
        self._fill = 0
        self._size = 0

    def update(self, view) -> None:
        view = memoryview(view).cast("B")
        while len(view):
            take = min(len(view), self.shard_size - self._fill)
            self._h.update(view[:take])
            self._fill += take
            self._size += take
            view = view[take:]
            if self._fill == self.shard_size:
                self.shards.append(self._h.hexdigest())
                self._h, self._fill = hashlib.sha256(), 0

    def result(self) -> Sharded:
        shards = self.shards + ([self._h.hexdigest()] if self._fill or not self.shards else [])
        return Sharded(self.shard_size, tuple(shards), root(self._size, self.shard_size, shards))


def plain_fd(f) -> int | None:
    """``f``'s descriptor when reading it reads exactly that regular file's bytes: a plain or
    buffered file object. A gzip, bz2 or lzma file also has a fileno(), of its compressed
    file: pread there would hash other bytes than the stream, so those are read in order."""
    raw = f.raw if isinstance(f, (io.BufferedReader, io.BufferedRandom)) else f
    if not isinstance(raw, io.FileIO):
        return None
    try:
        fd = raw.fileno()
        return fd if stat.S_ISREG(os.fstat(fd).st_mode) else None
    except (OSError, ValueError):
        return None


def hash_region(f: BinaryIO, offset: int, size: int, shard_size: int, *,
                progress: Callable[[int], None] | None = None) -> Sharded:
    """The sharded digest of ``size`` bytes of ``f`` from ``offset``, shards hashed in parallel."""
    fd = plain_fd(f)
    n = count(size, shard_size)
    workers = min(threads(), n)
    if fd is None or workers <= 1:
        return _sequential(f, offset, size, shard_size, progress)
    from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait  # only large entries need it

    stop = threading.Event()
    lock = threading.Lock()

    def tick(k: int) -> None:
        if progress:
            with lock:
                progress(k)

    shards: list[str | None] = [None] * n
    todo = iter(range(n))

    def worker() -> None:  # one buffer per worker, shards taken in turn: memory is workers x 1 MiB
        buf = bytearray(min(_BLOCK, shard_size))
        while not stop.is_set():
            with lock:
                i = next(todo, None)
            if i is None:
                return
            shards[i] = _shard(fd, offset + i * shard_size, min(shard_size, size - i * shard_size), buf, stop, tick)

    pool = ThreadPoolExecutor(workers, thread_name_prefix="tgsp-shard")
    futures = [pool.submit(worker) for _ in range(workers)]
    try:
        done, _ = wait(futures, return_when=FIRST_EXCEPTION)
        failed = next((fut.exception() for fut in done if fut.exception()), None)
        if failed is not None:
            raise failed
        for fut in futures:
            fut.result()
    except BaseException:  # a signal, Ctrl-C or a short read: stop every worker at its next block
        stop.set()
        raise
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
    digests = tuple(d for d in shards if d is not None)
    return Sharded(shard_size, digests, root(size, shard_size, digests))


def _shard(fd: int, start: int, length: int, buf: bytearray, stop: threading.Event,
           tick: Callable[[int], None]) -> str:
    h = hashlib.sha256()
    view, pos, end = memoryview(buf), start, start + length
    while pos < end and not stop.is_set():
        got = os.preadv(fd, [view[: min(len(buf), end - pos)]], pos)
        if not got:
            raise FormatError("package is truncated")
        h.update(view[:got])
        pos += got
        tick(got)
    if pos < end:
        raise FormatError("hashing was stopped")
    return h.hexdigest()


def _sequential(f: BinaryIO, offset: int, size: int, shard_size: int,
                progress: Callable[[int], None] | None) -> Sharded:
    h, buf = Hasher(shard_size), bytearray(min(_BLOCK, size) or 1)
    f.seek(offset)
    view, left = memoryview(buf), size
    while left:
        got = f.readinto(view[: min(len(buf), left)])
        if not got:
            raise FormatError("package is truncated")
        h.update(view[:got])
        left -= got
        if progress:
            progress(got)
    return h.result()
