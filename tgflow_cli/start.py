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


def version() -> str:
    """tgsp/version.py, run alone: importing the tgsp package would load its crypto first."""
    import importlib.util
    import os

    where = importlib.util.find_spec("tgsp").submodule_search_locations[0]
    spec = importlib.util.spec_from_file_location("_tgflow_version", os.path.join(where, "version.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.TOOL


def entry() -> None:
    if sys.argv[1:] in (["--version"], ["-V"]):  # the whole command: nothing to clean up, nothing to wait for
        sys.stdout.write(version() + "\n")
        sys.exit(0)
    pending: list[int] = []
    for s in EARLY:
        signal.signal(s, lambda signum, frame: pending.append(signum))
    try:
        from .fast import main as fast  # --version and `tgsp verify`, without typer (fast.py)

        code = fast(sys.argv[1:], pending)
        if code is not None:
            sys.exit(code)
        from .main import main
    except KeyboardInterrupt:  # Ctrl-C while loading: nothing was started
        sys.stderr.write("error: interrupted\n")
        sys.exit(130)
    sys.exit(main(pending=pending))
