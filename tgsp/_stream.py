"""Streaming chunked AEAD for payload files (private helper).

The STREAM construction (Hoang, Reyhanitabar, Rogaway, Vizar 2015), as age
uses it: AES-256-GCM over fixed-size plaintext chunks, nonce = 11-byte
big-endian chunk counter || 1-byte last-chunk flag. Reordering changes a
counter, truncation at a chunk boundary clears the last flag, and appending
follows a chunk that was sealed as last: every one fails authentication.

Each file gets its own key, HKDF-SHA256(file_key, info = label || path), so
a chunk can never be moved between files and nonces never repeat under a
key. Only the final chunk may be short; only an empty file has an empty one.
"""

from __future__ import annotations

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

AEAD_ID = "aes-256-gcm/stream-v1"
TAG = 16
DEFAULT_CHUNK = 1 << 20
MAX_CHUNK = 16 << 20
MIN_CHUNK = 1 << 10
_LABEL = b"tgsp/1 payload key\x00"


def file_cipher(file_key: bytes, path: str, label: bytes = _LABEL) -> AESGCM:
    """The chunk cipher of one file; ``label`` separates uses (payloads, sealed state)."""
    key = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=label + path.encode("utf-8")).derive(file_key)
    return AESGCM(key)


def nonce(index: int, last: bool) -> bytes:
    if index >= 1 << 88:
        raise OverflowError("too many chunks")
    return index.to_bytes(11, "big") + (b"\x01" if last else b"\x00")


def chunk_count(plain_size: int, chunk: int) -> int:
    return max(1, -(-plain_size // chunk))


def stored_size(plain_size: int, chunk: int) -> int:
    return plain_size + TAG * chunk_count(plain_size, chunk)


def plain_size_of(stored: int, chunk: int) -> int:
    """Inverse of ``stored_size``; raises ValueError for impossible sizes."""
    full, rest = divmod(stored, chunk + TAG)
    if rest == 0 and full > 0:
        return full * chunk
    if rest < TAG or (rest == TAG and full > 0):
        raise ValueError("impossible ciphertext length")
    return full * chunk + rest - TAG
