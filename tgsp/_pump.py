"""The streaming loop shared by build and unpack (private helper).

Read a fixed-size chunk into one of two reusable buffers, transform it
(encrypt, decrypt, or nothing) into a second reusable buffer, hand both
views to two hashing threads, and write the output while they hash. Each
hash runs on its own single-thread executor, so its updates stay in order;
a buffer is reused only after both hashes of its last chunk are done.
No per-chunk allocations: memory is flat and page faults stay out of the
hot path, which is what keeps build near the SHA-256 speed limit.

Either side's digest may be sharded (``_shards``): a large stored entry is
described by its shards' digests, so verify can hash them on every core.
"""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING, BinaryIO, Callable

from . import _shards
from .errors import FormatError

if TYPE_CHECKING:
    from concurrent.futures import Future

Transform = Callable[[int, bool, memoryview, memoryview], None]


Digest = str | _shards.Sharded  # hex SHA-256, or a sharded digest


def _new(shard: int | None):
    return _shards.Hasher(shard) if shard else hashlib.sha256()


def _result(h) -> Digest:
    return h.result() if isinstance(h, _shards.Hasher) else h.hexdigest()


class _Hasher:
    def __init__(self, shard: int | None) -> None:
        from concurrent.futures import ThreadPoolExecutor  # here: verify of a small package never needs it

        self.h = _new(shard)
        self.pool = ThreadPoolExecutor(1, thread_name_prefix="tgsp-sha256")

    def submit(self, view: memoryview) -> Future:
        return self.pool.submit(self.h.update, view)

    def result(self) -> Digest:
        self.pool.shutdown(wait=True)
        return _result(self.h)


def _read_exact(src: BinaryIO, view: memoryview) -> int:
    got = 0
    while got < len(view):
        n = src.readinto(view[got:])
        if not n:
            break
        got += n
    return got


def pump(src: BinaryIO, total: int, chunk: int, write: Callable[[memoryview], None], *,
         transform: Transform | None = None, overhead: int = 0,
         progress: Callable[[int], None] | None = None, shards: tuple[int | None, int | None] = (None, None),
         ) -> tuple[Digest, Digest]:
    """Stream ``total`` bytes from ``src`` in ``chunk``-sized pieces.

    ``overhead`` is how much longer (positive) or shorter (negative) a
    transformed chunk is than its input. ``shards``: the shard size of the
    input's and of the output's digest, None for one SHA-256. Returns (input
    digest, output digest); without a transform both hash the same bytes.
    """
    if total <= chunk:
        return _one(src, total, write, transform, overhead, progress, shards)
    bufs_in = [bytearray(chunk), bytearray(chunk)]
    bufs_out = [bytearray(max(chunk + overhead, 0)), bytearray(max(chunk + overhead, 0))] if transform else None
    two = transform is not None or shards[0] != shards[1]
    h_in, h_out = _Hasher(shards[0]), (_Hasher(shards[1]) if two else None)
    pending: list[list[Future]] = [[], []]
    offset, index = 0, 0
    try:
        while True:
            k = index & 1
            for fut in pending[k]:
                fut.result()
            want = min(chunk, total - offset)
            vin = memoryview(bufs_in[k])[:want]
            n = _read_exact(src, vin)
            if n != want:
                raise FormatError("input ended early (truncated, or changed while being read)")
            last = offset + n == total
            if transform:
                vout = memoryview(bufs_out[k])[: n + overhead]
                transform(index, last, vin, vout)
                pending[k] = [h_in.submit(vin), h_out.submit(vout)]
            else:
                vout = vin
                pending[k] = [h_in.submit(vin)] + ([h_out.submit(vin)] if h_out else [])
            write(vout)
            if progress:
                progress(n)
            offset += n
            index += 1
            if last:
                break
        for group in pending:
            for fut in group:
                fut.result()
    except BaseException:
        for hasher in (h_in, h_out):
            if hasher is not None:
                hasher.pool.shutdown(wait=True, cancel_futures=True)
        raise
    digest_in = h_in.result()
    return digest_in, (h_out.result() if h_out else digest_in)


def _one(src: BinaryIO, total: int, write: Callable[[memoryview], None], transform: Transform | None, overhead: int,
         progress: Callable[[int], None] | None, shards: tuple[int | None, int | None]) -> tuple[Digest, Digest]:
    """A file of one chunk, inline: for many small files (ciphertexts), starting two hashing
    threads per file cost more than the work itself (0.8 ms a file, measured)."""
    vin = memoryview(bytearray(total))
    if _read_exact(src, vin) != total:
        raise FormatError("input ended early (truncated, or changed while being read)")
    vout = vin
    if transform:
        vout = memoryview(bytearray(total + overhead))
        transform(0, True, vin, vout)
    write(vout)
    if progress:
        progress(total)
    h_in = _new(shards[0])
    h_in.update(vin)
    if transform is None and shards[0] == shards[1]:
        return _result(h_in), _result(h_in)
    h_out = _new(shards[1])
    h_out.update(vout)
    return _result(h_in), _result(h_out)
