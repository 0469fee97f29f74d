"""`-` for standard input and output, where a command reads or writes a file.

A package read from stdin is spooled to an unnamed temporary file first
(packages are read by seeking); one written to stdout is built into a
private temporary folder and copied out only after the build succeeded, so
a failed build writes nothing to the pipe.
"""

from __future__ import annotations

import contextlib
import shutil
import sys
import tempfile
from pathlib import Path
from typing import BinaryIO, Iterator

from tgsp.errors import InputError


def is_dash(path: Path | str | None) -> bool:
    return path is not None and str(path) == "-"


def no_dash(path: Path | str | None, what: str, flag: str = "-o") -> None:
    """Refuse ``-o -`` (or ``--state -``) where '-' cannot mean a stream: a folder, a package
    replaced in place, a state file that is read and then rewritten."""
    if is_dash(path):
        raise InputError(f"{flag} - cannot be used here: it names {what}, not a stream",
                         hint=f"give a path, e.g. {flag} ./{'out' if flag == '-o' else 'state.json'}")


def not_a_terminal(path: Path | str | None) -> None:
    """Refuse binary output to a terminal, as age does: it would only garble the screen."""
    if is_dash(path) and sys.stdout.isatty():
        raise InputError("refusing to write a binary package to a terminal",
                         hint="redirect stdout (-o - > pkg.tgsp, or pipe it), or give -o PATH")


@contextlib.contextmanager
def package_source(path: Path, *, named: bool = False) -> Iterator[Path | BinaryIO]:
    """``path``, or for '-' a seekable copy of standard input (a file object,
    or with ``named`` a private temporary file's path, removed afterwards).
    The copy is the package as it arrived: ciphertext, never decrypted bytes."""
    if not is_dash(path):
        yield path
        return
    if named:
        with tempfile.TemporaryDirectory(prefix="tgflow-stdin-") as tmp:
            target = Path(tmp) / "package.tgsp"
            with open(target, "wb") as f:
                shutil.copyfileobj(sys.stdin.buffer, f, 4 << 20)
            yield target
        return
    with tempfile.TemporaryFile(prefix="tgflow-stdin-") as f:
        shutil.copyfileobj(sys.stdin.buffer, f, 4 << 20)
        f.seek(0)
        yield f


@contextlib.contextmanager
def output_target(path: Path) -> Iterator[Path]:
    """Where to write: ``path``, or for '-' a temporary file copied to stdout on success."""
    if not is_dash(path):
        yield path
        return
    with tempfile.TemporaryDirectory(prefix="tgflow-stdout-") as tmp:
        target = Path(tmp) / "package.tgsp"
        yield target
        sys.stdout.flush()
        with open(target, "rb") as f:
            shutil.copyfileobj(f, sys.stdout.buffer, 4 << 20)
        sys.stdout.buffer.flush()
