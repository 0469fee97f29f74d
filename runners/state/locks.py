"""An OS-level lock on a folder (``flock``), with who holds it.

The kernel drops an ``flock`` when its holder dies, so a crashed run never
leaves the route locked: there is no stale lock to break by hand. The lock
file also names its holder (pid, host, command, since), cleared on a clean
release; a name still there when the lock is taken again means the last
holder died inside its critical section, and the caller is told so.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from tgsp import clock
from tgsp.errors import OutputError, RouteBusy


@dataclass(frozen=True)
class Held:
    path: Path
    stale: dict | None  # the holder a crash left named in the lock file, if any


def _holder(raw: str) -> dict | None:
    if not raw.strip():
        return None  # released cleanly
    try:
        obj = json.loads(raw)
    except ValueError:
        return {"unreadable": True}
    return obj if isinstance(obj, dict) else {"unreadable": True}


def describe(holder: dict | None) -> str:
    if not holder or holder.get("unreadable"):
        return "another process"
    return f"{holder.get('command', 'a command')} (pid {holder.get('pid')} on {holder.get('host')}, since {holder.get('since')})"


@contextlib.contextmanager
def locked(path: Path, what: str, command: str, *, wait: float = 0.0) -> Iterator[Held]:
    """Hold an exclusive lock on ``path`` or raise RouteBusy (after ``wait`` seconds)."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(path, os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0) | os.O_CLOEXEC, 0o600)
    except OSError as exc:
        raise OutputError(f"cannot open the lock {path}: {exc.strerror}",
                          hint="check that the state folder is writable") from None
    with os.fdopen(fd, "r+") as f:
        deadline = time.monotonic() + wait
        while True:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    f.seek(0)
                    raise RouteBusy(f"{what} is busy: {describe(_holder(f.read(4096)))} holds its lock") from None
                time.sleep(min(1.0, 0.05 + (time.monotonic() - deadline + wait) / 20))  # back off to 1 s
        try:
            f.seek(0)
            stale = _holder(f.read(4096))
            f.seek(0)
            f.truncate()
            f.write(json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "command": command,
                                "since": clock.fmt(clock.utcnow())}))
            f.flush()
            yield Held(path, stale)
        finally:
            f.seek(0)
            f.truncate()
            f.flush()
            fcntl.flock(f, fcntl.LOCK_UN)
