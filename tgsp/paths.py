"""Safe relative paths for package entries and unpacked files."""

from __future__ import annotations

import unicodedata

from .errors import UnsafeEntryError

MAX_PATH_BYTES = 240
_FORBIDDEN = set('\\:*?"<>|')


def check_relpath(path: object, *, what: str = "path") -> str:
    """Return ``path`` if it is a safe, portable relative path; else raise.

    Rejects absolute paths, ``.``/``..`` components, empty components,
    control characters, backslashes and Windows-reserved characters, and
    anything not in Unicode NFC (so one name has one spelling).
    """
    if not isinstance(path, str) or not path:
        raise UnsafeEntryError(f"{what} is empty or not a string")
    shown = path.encode("unicode_escape").decode("ascii")[:80]
    if path.startswith("/"):
        raise UnsafeEntryError(f"{what} {shown!r} is absolute")
    if len(path.encode("utf-8")) > MAX_PATH_BYTES:
        raise UnsafeEntryError(f"{what} {shown!r} is longer than {MAX_PATH_BYTES} bytes")
    if unicodedata.normalize("NFC", path) != path:
        raise UnsafeEntryError(f"{what} {shown!r} is not in Unicode NFC form")
    for part in path.split("/"):
        if part in ("", ".", ".."):
            raise UnsafeEntryError(f"{what} {shown!r} has an empty, '.' or '..' component")
        if any(ord(c) < 32 or ord(c) == 127 or c in _FORBIDDEN for c in part):
            raise UnsafeEntryError(f"{what} {shown!r} has a control or reserved character")
    return path


def casefold_key(path: str) -> str:
    """Two paths that collide on a case-insensitive filesystem share this key."""
    return unicodedata.normalize("NFC", path.casefold())
