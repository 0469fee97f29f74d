"""Passphrase sealing for private keys at rest (private helper).

Argon2id (RFC 9106, second recommended profile: 64 MiB, t=3, p=4) derives a
key that AES-256-GCM uses to seal the private seeds. The associated data is
the key's public record, so a sealed blob cannot be moved onto other public
keys. A wrong passphrase and a tampered blob give the same error.
"""

from __future__ import annotations

import os
from typing import Any

from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.argon2 import Argon2id

from .canonical import b64d, b64e
from .errors import FormatError, WrongPassphraseError

KDF_ID = "argon2id"
AEAD_ID = "aes-256-gcm"
DEFAULT_PARAMS = {"memory_cost": 65536, "iterations": 3, "lanes": 4}
# Refuse files that ask for absurd work (a denial-of-service on open) or for
# parameters too weak to mean anything. The bounds are inclusive: memory_cost
# in KiB from 19 MiB (OWASP's floor) to 1 GiB, at most 16 passes and 16 lanes,
# and at most 4 GiB-passes of work in all (our own keys use 64 MiB x 3).
_LIMITS = {"memory_cost": (19456, 1 << 20), "iterations": (1, 16), "lanes": (1, 16)}
MAX_WORK_KIB = 4 << 20


def _kdf(passphrase: bytes, salt: bytes, params: dict[str, int]) -> bytes:
    return Argon2id(salt=salt, length=32, **params).derive(passphrase)


def seal(secret: bytes, passphrase: str, aad: bytes) -> dict[str, Any]:
    salt, nonce = os.urandom(16), os.urandom(12)
    key = _kdf(passphrase.encode("utf-8"), salt, DEFAULT_PARAMS)
    return {
        "kdf": {"alg": KDF_ID, "salt": b64e(salt), **DEFAULT_PARAMS},
        "aead": AEAD_ID,
        "nonce": b64e(nonce),
        "ciphertext": b64e(AESGCM(key).encrypt(nonce, secret, aad)),
    }


def open_sealed(blob: Any, passphrase: str, aad: bytes) -> bytes:
    if not isinstance(blob, dict) or not isinstance(blob.get("kdf"), dict):
        raise FormatError("sealed private key is malformed")
    kdf = blob["kdf"]
    if kdf.get("alg") != KDF_ID or blob.get("aead") != AEAD_ID:
        raise FormatError("sealed private key uses an unknown KDF or cipher")
    params = {}
    for name, (lo, hi) in _LIMITS.items():
        value = kdf.get(name)
        if not isinstance(value, int) or isinstance(value, bool) or not lo <= value <= hi:
            raise FormatError(f"sealed private key has an out-of-range {name}")
        params[name] = value
    if params["memory_cost"] * params["iterations"] > MAX_WORK_KIB:
        raise FormatError("sealed private key asks for more KDF work than tgflow allows")
    salt = b64d(kdf.get("salt"), what="salt")
    nonce = b64d(blob.get("nonce"), what="nonce")
    if len(salt) < 16 or len(nonce) != 12:
        raise FormatError("sealed private key has a bad salt or nonce")
    key = _kdf(passphrase.encode("utf-8"), salt, params)
    try:
        return AESGCM(key).decrypt(nonce, b64d(blob.get("ciphertext"), what="ciphertext"), aad)
    except Exception:
        raise WrongPassphraseError(
            "wrong passphrase (or the key file was altered)",
            hint="check TGFLOW_PASSPHRASE / --passphrase-file",
        ) from None
