"""Atomic output: write beside the target, fsync, then rename over it.

A crash or error at any point leaves either the old file or nothing at the
destination, never a half-written package. Temporaries are named
``.<name>.tgflow~<host>~<pid>.<random>.tmp`` (``.unpack`` for folders), so
after a ``kill -9`` the next tgflow run in the same folder can prove which
leftovers are its own (this host, a process that no longer exists, our uid)
and remove only those. Cleanups run with SIGINT/SIGTERM deferred, so a
second signal cannot cut them short.

Rule for output locations (every command): a missing parent folder is
created; a destination that is a symbolic link is refused.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import threading
from pathlib import Path
from typing import BinaryIO, Iterator

from .errors import InputError, OutputError


def _shutil():
    import shutil  # loaded when needed: it pulls in bz2 and lzma, which `tgsp verify` never uses

    return shutil


def _tempfile():
    import tempfile

    return tempfile


_HOST = re.sub(r"[^A-Za-z0-9.-]", "-", os.uname().nodename or "host")[:64]  # socket.gethostname(), without socket
_TEMP = re.compile(r"\..+\.tgflow~(?P<host>[A-Za-z0-9.-]+)~(?P<pid>\d+)\.[a-z0-9_]+\.(tmp|unpack)\Z", re.S)
_LIVE: set[str] = set()  # this process's own temporaries, by path


def temp_prefix(name: str) -> str:
    return f".{name}.tgflow~{_HOST}~{os.getpid()}."


@contextlib.contextmanager
def signals_deferred() -> Iterator[None]:
    """Hold SIGINT/SIGTERM/SIGHUP until the block ends (cleanup must finish), then deliver them.

    Python-level: the handlers are swapped for ones that only record the signal. Masking with
    pthread_sigmask is not enough: it masks the calling thread only, and in a process with other
    threads (torch's, a test runner's) the kernel hands the signal to one of those, after which
    Python runs the handler in the main thread at once."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    pending: list[int] = []
    held = [s for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP) if s is not None]
    old = {s: signal.signal(s, lambda signum, frame: pending.append(signum)) for s in held}
    try:
        yield
    finally:
        for s, handler in old.items():
            signal.signal(s, handler)
        for signum in dict.fromkeys(pending):  # each signal once, in arrival order
            if old[signum] not in (signal.SIG_IGN, None):
                signal.raise_signal(signum)  # the restored handler runs here


def _stale(entry: os.DirEntry) -> bool:
    m = _TEMP.match(entry.name)
    if m is None or m["host"] != _HOST or entry.path in _LIVE:
        return False
    try:
        if entry.stat(follow_symlinks=False).st_uid != os.getuid() or entry.is_symlink():
            return False
    except OSError:
        return False
    pid = int(m["pid"])
    if pid == os.getpid():
        return True  # ours by name, but not live in this process: a previous incarnation (container restart)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except OSError:
        return False  # alive, owned by someone else
    return False


def sweep_stale(folder: str | os.PathLike) -> list[str]:
    """Remove tgflow's own temporaries left in ``folder`` by a killed run."""
    removed = []
    with contextlib.suppress(OSError), os.scandir(folder) as it:
        for entry in it:
            if _stale(entry):
                with signals_deferred():
                    if entry.is_dir(follow_symlinks=False):
                        _shutil().rmtree(entry.path, ignore_errors=True)
                    else:
                        with contextlib.suppress(OSError):
                            os.unlink(entry.path)
                removed.append(entry.name)
    return removed


def prepare_parent(dest: Path) -> Path:
    """The folder ``dest`` goes into, created when missing; links refused."""
    if dest.is_symlink():
        raise InputError(f"output {dest} is a symbolic link; refusing to write through it",
                         hint="give the real path")
    parent = dest.parent if str(dest.parent) else Path(".")
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise OutputError(f"cannot create output folder {parent}: a file of that name exists") from None
    except OSError as exc:
        raise OutputError(f"cannot create output folder {parent}: {exc.strerror}") from None
    if not parent.is_dir():
        raise OutputError(f"output folder {parent} is not a folder")
    sweep_stale(parent)
    return parent


def _os_error(dest, exc: OSError) -> OutputError:
    return OutputError(f"cannot write {dest}: {exc.strerror or exc}",
                       hint="check free space and permissions of the output folder")


@contextlib.contextmanager
def private_dir(dest: Path) -> Iterator[Path]:
    """A temporary folder beside ``dest`` (mode 0700), removed on any failure.
    The caller renames it into place before the block ends."""
    parent = prepare_parent(dest)
    tmp = None
    try:
        with signals_deferred():  # as in atomic_file: no signal between creating it and recording it
            try:
                tmp = Path(_tempfile().mkdtemp(prefix=temp_prefix(dest.name), suffix=".unpack", dir=parent))
            except OSError as exc:
                raise _os_error(dest, exc) from None
            _LIVE.add(str(tmp))
        yield tmp
    except BaseException:
        if tmp is not None:
            with signals_deferred():
                _shutil().rmtree(tmp, ignore_errors=True)
        raise
    finally:
        _LIVE.discard(str(tmp))


@contextlib.contextmanager
def atomic_file(dest: str | os.PathLike, *, mode: int = 0o644, overwrite: bool = True) -> Iterator[BinaryIO]:
    dest = Path(dest)
    if dest.is_dir() and not dest.is_symlink():
        raise InputError(f"{dest} is a directory", hint="give a file path for the output")
    if not overwrite and (dest.exists() or dest.is_symlink()):
        raise InputError(f"{dest} already exists", hint="choose another path, remove it first, or pass --force")
    parent = prepare_parent(dest)
    tmp = None
    try:
        # Signals are held from creating the temporary until its name is known to the cleanup
        # below: a SIGTERM in between would otherwise leave it behind.
        with signals_deferred():
            fd, tmp = _tempfile().mkstemp(prefix=temp_prefix(dest.name), suffix=".tmp", dir=parent)
            _LIVE.add(tmp)
        with os.fdopen(fd, "wb", buffering=0) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, dest)
        _fsync_dir(parent)
    except BaseException as exc:
        if tmp is not None:
            with signals_deferred(), contextlib.suppress(OSError):
                os.unlink(tmp)
        if isinstance(exc, OSError):
            raise _os_error(dest, exc) from None
        raise
    finally:
        _LIVE.discard(tmp)


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


def fsync_tree(root: Path) -> None:
    for folder, _dirs, _files in os.walk(root):
        _fsync_dir(Path(folder))


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
