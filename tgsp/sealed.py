"""Sealed state files: private bytes at rest, encrypted to recipient keys (docs/format.md §14).

A route's state folder keeps what a round derived from private data between
commands: checkpoints (LoRA weights, AdamW moments), retained examples, the
novelty record, a federated site's residual. Each is one sealed file:

    magic "tgflow-sealed/1\\n" | u32be header length | header (JCS JSON) | STREAM chunks

The header names the recipients (a fresh data key wrapped to each with the
packages' hybrid HPKE), the chunk size, the plaintext size and ``ad``: what
the file is (route, kind, round, step...). The chunk key is derived from the
data key and the SHA-256 of everything before the chunks, so a changed
header, a file moved between routes or rounds, or a cut one fails to open.
Readers compare ``ad`` with what they expect before decrypting a byte.
"""

from __future__ import annotations

import hashlib
import os
import struct
from dataclasses import dataclass
from typing import Any, Sequence

from . import _kem, _stream
from .canonical import b64d, b64e, encode, is_int, parse
from .errors import DecryptionError, FormatError, NotARecipientError

MAGIC = b"tgflow-sealed/1\n"
FORMAT = "tgflow.sealed-state/1"
LABEL = b"tgflow/1 sealed state\x00"
MAX_HEADER = 256 << 10  # 64 recipients' wrapped keys take about 105 KiB
MAX_RECIPIENTS = 64
_FIELDS = {"format", "aead", "wrap", "chunk_size", "size", "ad", "recipients"}


@dataclass(frozen=True)
class Header:
    chunk_size: int
    size: int
    ad: dict[str, Any]
    recipients: dict[str, bytes]  # key id -> wrapped data key
    prefix: bytes  # magic, length and header bytes: what the chunk key binds


def seal(data: bytes, recipients: Sequence[Any], ad: dict[str, Any], *,
         chunk_size: int = _stream.DEFAULT_CHUNK) -> bytearray:
    """``data`` sealed to ``recipients`` (PublicKey objects of kind recipient), bound to ``ad``."""
    unique = {r.keyid: r for r in recipients}  # two names for one key: one entry, which readers require
    if not 0 < len(unique) <= MAX_RECIPIENTS:
        raise ValueError(f"a sealed file needs 1 to {MAX_RECIPIENTS} recipients")
    key = os.urandom(32)
    wrapped = [{"keyid": k, "wrapped": b64e(_kem.wrap(key, unique[k].public))} for k in sorted(unique)]
    head = encode({"format": FORMAT, "aead": _stream.AEAD_ID, "wrap": _kem.SUITE_ID, "chunk_size": chunk_size,
                   "size": len(data), "ad": ad, "recipients": wrapped})
    if len(head) > MAX_HEADER:  # a file no reader would open must not be written
        raise ValueError(f"a sealed file header of {len(head)} bytes is over {MAX_HEADER}")
    prefix = MAGIC + struct.pack(">I", len(head)) + head
    cipher = _stream.file_cipher(key, hashlib.sha256(prefix).hexdigest(), LABEL)
    # Encrypted in place into one buffer: a checkpoint is large, and joining chunks would copy it again.
    view, count = memoryview(data), _stream.chunk_count(len(data), chunk_size)
    out = bytearray(len(prefix) + _stream.stored_size(len(data), chunk_size))
    out[:len(prefix)] = prefix
    dest, at = memoryview(out), len(prefix)
    for i in range(count):
        part = view[i * chunk_size:(i + 1) * chunk_size]
        cipher.encrypt_into(_stream.nonce(i, i == count - 1), part, None, dest[at:at + len(part) + _stream.TAG])
        at += len(part) + _stream.TAG
    return out


def is_sealed(blob: bytes) -> bool:
    return blob[: len(MAGIC)] == MAGIC


def read_header(blob: bytes) -> Header:
    """The header of a sealed file, checked strictly; decrypts nothing."""
    if not is_sealed(blob):
        raise FormatError("not a sealed state file (no tgflow-sealed/1 magic)")
    if len(blob) < len(MAGIC) + 4:
        raise FormatError("sealed state file is cut short")
    (n,) = struct.unpack(">I", blob[len(MAGIC):len(MAGIC) + 4])
    if not 0 < n <= MAX_HEADER or len(blob) < len(MAGIC) + 4 + n:
        raise FormatError("sealed state header length is out of range")
    prefix = blob[: len(MAGIC) + 4 + n]
    h = parse(prefix[len(MAGIC) + 4:], what="sealed state header", canonical=True)
    if not isinstance(h, dict) or set(h) != _FIELDS or h["format"] != FORMAT:
        raise FormatError(f"sealed state header must be a {FORMAT} object with exactly {sorted(_FIELDS)}")
    if h["aead"] != _stream.AEAD_ID or h["wrap"] != _kem.SUITE_ID:
        raise FormatError(f"sealed state file uses {h['aead']!r}/{h['wrap']!r}; this tgflow reads only "
                          f"{_stream.AEAD_ID}/{_kem.SUITE_ID}")
    chunk, size = h["chunk_size"], h["size"]
    if not (is_int(chunk) and _stream.MIN_CHUNK <= chunk <= _stream.MAX_CHUNK and is_int(size) and size >= 0):
        raise FormatError("sealed state header has a bad chunk_size or size")
    if not isinstance(h["ad"], dict):
        raise FormatError("sealed state header ad must be an object")
    return Header(chunk, size, h["ad"], _recipients(h["recipients"]), prefix)


def _recipients(value: Any) -> dict[str, bytes]:
    if not isinstance(value, list) or not 0 < len(value) <= MAX_RECIPIENTS:
        raise FormatError(f"sealed state header needs 1 to {MAX_RECIPIENTS} recipients")
    out: dict[str, bytes] = {}
    for r in value:
        if not isinstance(r, dict) or set(r) != {"keyid", "wrapped"} or not isinstance(r["keyid"], str):
            raise FormatError("each sealed state recipient must be {keyid, wrapped}")
        if r["keyid"] in out:
            raise FormatError("a sealed state recipient is listed twice")
        out[r["keyid"]] = b64d(r["wrapped"], what="wrapped key")
    if list(out) != sorted(out):
        raise FormatError("sealed state recipients must be sorted by keyid")
    return out


def open_sealed(blob: bytes, identities: Sequence[Any], ad: dict[str, Any]) -> bytes:
    """The plaintext of a sealed file whose ``ad`` is exactly ``ad``.

    FormatError for a malformed file or another binding (it names the fields that differ);
    NotARecipientError if no identity is listed; otherwise the opaque DecryptionError."""
    h = read_header(blob)
    if encode(h.ad) != encode(ad):  # JSON equality, types included: true is not 1
        diff = sorted(k for k in set(h.ad) | set(ad) if encode([h.ad.get(k)]) != encode([ad.get(k)]))
        raise FormatError("sealed for another " + ", ".join(f"{k} ({_show(h.ad.get(k))}, expected {_show(ad.get(k))})"
                                                               for k in diff))
    if len(blob) - len(h.prefix) != _stream.stored_size(h.size, h.chunk_size):
        raise DecryptionError()
    mine = [i for i in identities if i.keyid in h.recipients]
    if not mine:
        raise NotARecipientError([i.keyid for i in identities], sorted(h.recipients))
    key = _unwrap(mine, h.recipients)
    cipher = _stream.file_cipher(key, hashlib.sha256(h.prefix).hexdigest(), LABEL)
    body, step = memoryview(blob)[len(h.prefix):], h.chunk_size + _stream.TAG
    count = _stream.chunk_count(h.size, h.chunk_size)
    try:
        return b"".join(cipher.decrypt(_stream.nonce(i, i == count - 1), body[i * step:(i + 1) * step], None)
                        for i in range(count))
    except Exception:
        raise DecryptionError() from None


def _unwrap(identities: Sequence[Any], wrapped: dict[str, bytes]) -> bytes:
    for ident in identities:
        try:
            return ident.unwrap(wrapped[ident.keyid])
        except DecryptionError:
            continue
    raise DecryptionError()


def _show(value: Any) -> str:
    return encode(value).decode("utf-8") if value is not None else "none"
