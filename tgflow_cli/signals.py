"""Signals for the CLI: SIGTERM becomes an exception, so cleanup runs.

Ctrl-C (SIGINT) already raises KeyboardInterrupt. SIGTERM (what Kubernetes
and CI runners send) would kill the process at once, leaving temporary
files behind, so while a command runs it raises ``Terminated`` instead.
Both unwind through the library's ``except BaseException`` cleanups
(atomic outputs, the private unpack folder) and end with a non-zero exit:
130 for SIGINT, 143 for SIGTERM. ``peft run`` installs its own handlers
for the graceful checkpoint (exit 75) and restores these afterwards.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from typing import Iterator


class Terminated(BaseException):
    """SIGTERM (or SIGHUP) arrived; not an Exception, so only cleanups see it."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


def _raise(signum, frame) -> None:
    raise Terminated(signum)


@contextlib.contextmanager
def terminate_raises() -> Iterator[None]:
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {s: signal.signal(s, _raise) for s in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
