"""File-key wrapping with hybrid HPKE (private helper).

RFC 9180 HPKE, base mode, single shot, with the hybrid KEM
ML-KEM-768 + X25519, HKDF-SHA256 and AES-256-GCM. The ``info`` string binds
the wrapped key to its purpose.
"""

from __future__ import annotations

from cryptography.hazmat.primitives import hpke
from cryptography.hazmat.primitives.asymmetric import mlkem, x25519

from .errors import DecryptionError

X25519 = "x25519"
MLKEM768 = "ml-kem-768"
SUITE_ID = "hpke-base/mlkem768-x25519/hkdf-sha256/aes-256-gcm"
PUBLIC_SIZES = {X25519: 32, MLKEM768: 1184}
INFO = b"tgsp/1 file key"

_SUITE = hpke.Suite(hpke.KEM.MLKEM768_X25519, hpke.KDF.HKDF_SHA256, hpke.AEAD.AES_256_GCM)


def new_seeds() -> dict[str, bytes]:
    return {
        X25519: x25519.X25519PrivateKey.generate().private_bytes_raw(),
        MLKEM768: mlkem.MLKEM768PrivateKey.generate().private_bytes_raw(),
    }


def public_from_seeds(seeds: dict[str, bytes]) -> dict[str, bytes]:
    return {
        X25519: x25519.X25519PrivateKey.from_private_bytes(seeds[X25519]).public_key().public_bytes_raw(),
        MLKEM768: mlkem.MLKEM768PrivateKey.from_seed_bytes(seeds[MLKEM768]).public_key().public_bytes_raw(),
    }


def wrap(file_key: bytes, public: dict[str, bytes]) -> bytes:
    recipient = hpke.MLKEM768X25519PublicKey(
        mlkem.MLKEM768PublicKey.from_public_bytes(public[MLKEM768]),
        x25519.X25519PublicKey.from_public_bytes(public[X25519]),
    )
    return _SUITE.encrypt(file_key, recipient, info=INFO)


def unwrap(wrapped: bytes, seeds: dict[str, bytes]) -> bytes:
    """Recover the file key, or raise the opaque ``DecryptionError``."""
    try:
        private = hpke.MLKEM768X25519PrivateKey(
            mlkem.MLKEM768PrivateKey.from_seed_bytes(seeds[MLKEM768]),
            x25519.X25519PrivateKey.from_private_bytes(seeds[X25519]),
        )
        key = _SUITE.decrypt(wrapped, private, info=INFO)
    except Exception:
        raise DecryptionError() from None
    if len(key) != 32:
        raise DecryptionError()
    return key
