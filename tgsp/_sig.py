"""Ed25519 and ML-DSA-65 primitives (private helper).

``cryptography`` (>= 48) is the implementation. ``pqcrypto`` is a
verification fallback for ML-DSA-65 where the installed OpenSSL build lacks
it, and the cross-check in the tests; both produce FIPS 204 signatures with
an empty context, so they interoperate.
"""

from __future__ import annotations

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric import ed25519

from .errors import KeyringError

try:  # ML-DSA needs cryptography >= 48 built against a capable OpenSSL.
    from cryptography.hazmat.primitives.asymmetric import mldsa as _mldsa

    _mldsa.MLDSA65PrivateKey.generate()
    HAVE_MLDSA = True
except Exception:  # pragma: no cover - depends on the wheel
    HAVE_MLDSA = False

ED25519 = "ed25519"
MLDSA65 = "ml-dsa-65"
ALGORITHMS = (ED25519, MLDSA65)
PUBLIC_SIZES = {ED25519: 32, MLDSA65: 1952}
SIGNATURE_SIZES = {ED25519: 64, MLDSA65: 3309}


def new_seed(alg: str) -> bytes:
    if alg == ED25519:
        return ed25519.Ed25519PrivateKey.generate().private_bytes_raw()
    if alg == MLDSA65:
        _require_mldsa()
        return _mldsa.MLDSA65PrivateKey.generate().private_bytes_raw()
    raise ValueError(alg)


def public_from_seed(alg: str, seed: bytes) -> bytes:
    return _private(alg, seed).public_key().public_bytes_raw()


def sign(alg: str, seed: bytes, message: bytes) -> bytes:
    return _private(alg, seed).sign(message)


def verify(alg: str, public: bytes, message: bytes, signature: bytes) -> bool:
    """True only for a valid signature; never raises for bad input."""
    if len(public) != PUBLIC_SIZES.get(alg, -1) or len(signature) != SIGNATURE_SIZES[alg]:
        return False
    try:
        if alg == ED25519:
            ed25519.Ed25519PublicKey.from_public_bytes(public).verify(signature, message)
            return True
        if HAVE_MLDSA:
            _mldsa.MLDSA65PublicKey.from_public_bytes(public).verify(signature, message)
            return True
        from pqcrypto.sign import ml_dsa_65  # pragma: no cover

        ml_dsa_65.verify(public, message, signature)  # pragma: no cover
        return True  # pragma: no cover
    except Exception:  # InvalidSignature, ValueError, pqcrypto errors: all "no"
        return False


def _private(alg: str, seed: bytes):
    if alg == ED25519:
        return ed25519.Ed25519PrivateKey.from_private_bytes(seed)
    if alg == MLDSA65:
        _require_mldsa()
        return _mldsa.MLDSA65PrivateKey.from_seed_bytes(seed)
    raise ValueError(alg)


def _require_mldsa() -> None:
    if not HAVE_MLDSA:
        raise KeyringError(
            "this cryptography build has no ML-DSA-65; signing needs it",
            hint="install cryptography>=48 (pip install -U cryptography)",
        )


__all__ = ["InvalidSignature", "ALGORITHMS", "ED25519", "MLDSA65"]
