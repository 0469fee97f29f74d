"""Reading a user-named input file: bounded, with one clear error per failure.

Every JSON input (specs, key files, revocations, evidence, state files,
passphrase files) is read through here with a byte cap, so ``/dev/zero`` or
a huge file is refused after reading at most cap + 1 bytes.
"""

from __future__ import annotations

import contextlib
import os
import stat
import sys
from pathlib import Path
from typing import BinaryIO, Iterator

from .errors import InputError, NotFoundError

MAX_INPUT = 16 << 20  # far above any spec, key file or revocation we write


def read_input(path: str | os.PathLike, what: str, *, missing: type[NotFoundError] = NotFoundError,
               max_bytes: int = MAX_INPUT, error: type[Exception] = InputError) -> bytes:
    """The file's bytes ('-' is stdin); ``missing`` if it does not exist,
    ``error`` if it is unreadable or larger than ``max_bytes``."""
    if str(path) == "-":
        data = sys.stdin.buffer.read(max_bytes + 1)
        label = "standard input"
    else:
        p = Path(path)
        label = str(p)
        try:
            with open(p, "rb") as f:
                data = f.read(max_bytes + 1)
        except FileNotFoundError:
            raise missing(f"{what} {p} does not exist") from None
        except IsADirectoryError:
            raise error(f"{what} {p} is a folder, not a file") from None
        except OSError as exc:
            raise error(f"cannot read {what} {p}: {exc.strerror}") from None
    if len(data) > max_bytes:
        raise error(f"{what} {label} is larger than {max_bytes} bytes; refusing to read it")
    return data


@contextlib.contextmanager
def open_regular(path: str | os.PathLike, what: str, *, missing: type[Exception] = NotFoundError,
                 error: type[Exception] = InputError, hint: str | None = None) -> Iterator[BinaryIO]:
    """``path`` open for reading, checked on the open file to be a regular file: a link is not
    followed and a FIFO or device does not block (state, layouts and metrics files that another
    user or process could have replaced). ``missing`` if it does not exist, ``error`` otherwise."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        raise missing(f"{what} {path} does not exist", **({"hint": hint} if hint else {})) from None
    except OSError as exc:
        raise error(f"cannot read {what} {path}: {exc.strerror} (a link is refused)",
                    **({"hint": hint} if hint else {})) from None
    with os.fdopen(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
            raise error(f"{what} {path} is not a regular file; refused", **({"hint": hint} if hint else {}))
        yield f

