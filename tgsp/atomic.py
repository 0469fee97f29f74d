"""Atomic output: write beside the target, fsync, then rename over it.

A crash or error at any point leaves either the old file or nothing at the
destination, never a half-written package.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import BinaryIO, Iterator

from .errors import OutputError


@contextlib.contextmanager
def atomic_file(dest: str | os.PathLike, *, mode: int = 0o644, overwrite: bool = True) -> Iterator[BinaryIO]:
    dest = Path(dest)
    if dest.is_dir():
        raise OutputError(f"{dest} is a directory", hint="give a file path for the output")
    if not overwrite and dest.exists():
        raise OutputError(f"{dest} already exists", hint="choose another path or remove it first")
    parent = dest.parent if str(dest.parent) else Path(".")
    if not parent.is_dir():
        raise OutputError(f"output folder {parent} does not exist", hint=f"mkdir -p {parent}")
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".tmp", dir=parent)
    except OSError as exc:
        raise OutputError(f"cannot write in {parent}: {exc.strerror}") from None
    try:
        with os.fdopen(fd, "wb", buffering=0) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, dest)
        _fsync_dir(parent)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if isinstance(exc, OSError):
            raise OutputError(f"cannot write {dest}: {exc.strerror or exc}") from None
        raise


class DropBehind:
    """A raw file that asks the kernel to write back and drop what it has
    written, every ``window`` bytes. A multi-GiB package then neither evicts
    the page cache nor leaves a huge fsync for the end."""

    def __init__(self, f: BinaryIO, window: int = 64 << 20) -> None:
        self.f, self.window = f, window
        self._written = self._dropped = 0
        self._fd = f.fileno()

    def write(self, data) -> int:
        n = self.f.write(data)
        self._written += n
        if self._written - self._dropped >= self.window and hasattr(os, "posix_fadvise"):
            with contextlib.suppress(OSError):
                os.posix_fadvise(self._fd, self._dropped, self._written - self._dropped, os.POSIX_FADV_DONTNEED)
            self._dropped = self._written
        return n

    def fileno(self) -> int:
        return self._fd


def write_all(f: BinaryIO, data) -> None:
    """Write every byte: raw (unbuffered) files may accept less than asked."""
    view = memoryview(data)
    while view:
        n = f.write(view)
        view = view[n:]


def write_bytes(dest: str | os.PathLike, data: bytes, *, mode: int = 0o644, overwrite: bool = True) -> None:
    with atomic_file(dest, mode=mode, overwrite=overwrite) as f:
        write_all(f, data)


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
