"""Canonical encoding: RFC 8785 (JCS) JSON, strict parsing, and digests.

Every signature and digest in TGSP is computed over JCS bytes, so two
implementations that agree on the data agree on the bytes.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
from typing import Any

import rfc8785

from .errors import FormatError


def encode(obj: Any) -> bytes:
    """JCS-canonical UTF-8 bytes of ``obj``."""
    try:
        return rfc8785.dumps(obj)
    except (rfc8785.CanonicalizationError, TypeError, ValueError) as exc:
        raise FormatError(f"value cannot be canonically encoded: {exc}") from exc


MAX_DEPTH = 64  # our own documents nest about 8 deep
# One match per string (skipped whole) or per bracket: cheap even for MiBs of base64.
_TOKENS = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"|[\[\]{}]', re.S)


def is_int(value: Any) -> bool:
    """A JSON integer: ``true`` is not 1 here."""
    return isinstance(value, int) and not isinstance(value, bool)


def check_depth(data: bytes, *, what: str = "JSON", limit: int = MAX_DEPTH) -> None:
    """Refuse nesting deeper than ``limit`` before the parser recurses."""
    depth = 0
    for m in _TOKENS.finditer(data):
        c = m.group()[0]
        if c in b"[{":
            depth += 1
            if depth > limit:
                raise FormatError(f"{what} nests deeper than {limit} levels")
        elif c in b"]}":
            depth -= 1


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise FormatError(f"duplicate JSON key {key!r}")
        out[key] = value
    return out


def _no_constants(name: str) -> Any:
    raise FormatError(f"non-finite number {name} is not allowed")


def parse(data: bytes, *, what: str = "JSON", canonical: bool = False) -> Any:
    """Strictly parse JSON: UTF-8 only, no duplicate keys, no NaN/Infinity.

    With ``canonical=True`` the bytes must also be exactly their JCS form,
    so there is one and only one byte string for each value.
    """
    check_depth(data, what=what)
    try:
        text = data.decode("utf-8")
        obj = json.loads(text, object_pairs_hook=_no_duplicates, parse_constant=_no_constants)
    except FormatError as exc:
        raise FormatError(f"{what}: {exc}") from exc
    except UnicodeDecodeError as exc:  # in the reader's words, not the codec's
        raise FormatError(f"{what} is unreadable at byte {exc.start}: not UTF-8 text") from None
    except json.JSONDecodeError as exc:
        raise FormatError(f"{what} is unreadable at byte {exc.pos}: not valid JSON ({exc.msg})") from None
    except (ValueError, RecursionError) as exc:
        raise FormatError(f"{what} is not valid JSON: {exc}") from None
    if canonical and encode(obj) != data:
        raise FormatError(f"{what} is not in canonical (RFC 8785) form")
    return obj


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def b64e(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def b64d(text: Any, *, what: str = "base64 field") -> bytes:
    if not isinstance(text, str):
        raise FormatError(f"{what} must be a base64 string")
    try:
        raw = base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError) as exc:
        raise FormatError(f"{what} is not valid base64") from exc
    if b64e(raw) != text:  # one encoding per value: no stray padding bits
        raise FormatError(f"{what} is not canonical base64")
    return raw
