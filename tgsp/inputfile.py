"""Reading a user-named input file with one clear error per failure."""

from __future__ import annotations

import os
from pathlib import Path

from .errors import InputError, NotFoundError


def read_input(path: str | os.PathLike, what: str, *, missing: type[NotFoundError] = NotFoundError) -> bytes:
    """The file's bytes; ``missing`` if it does not exist, InputError if unreadable."""
    p = Path(path)
    try:
        return p.read_bytes()
    except FileNotFoundError:
        raise missing(f"{what} {p} does not exist") from None
    except IsADirectoryError:
        raise InputError(f"{what} {p} is a folder, not a file") from None
    except OSError as exc:
        raise InputError(f"cannot read {what} {p}: {exc.strerror}") from None
