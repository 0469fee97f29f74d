"""The console script's first step: catch termination signals, then load the CLI.

Loading typer, rich and the command modules takes a few tenths of a second (more on a
loaded machine). A SIGTERM or SIGHUP in that window would kill the process with the
default action: no cleanup, and a status a scheduler cannot tell from a crash. So the
handlers go in before any heavy import; a signal that arrives early is remembered, and
the command ends as terminated (143) as soon as the CLI's own handling is in place.
"""

from __future__ import annotations

import signal
import sys

EARLY = (signal.SIGTERM, signal.SIGHUP)


def entry() -> None:
    pending: list[int] = []
    for s in EARLY:
        signal.signal(s, lambda signum, frame: pending.append(signum))
    try:
        from .main import main
    except KeyboardInterrupt:  # Ctrl-C while loading: nothing was started
        sys.stderr.write("error: interrupted\n")
        sys.exit(130)
    sys.exit(main(pending=pending))
