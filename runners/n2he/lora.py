"""HE-LoRA's two planes (experimental): a LoRA delta ΔW·x = s·B(A x) computed under CKKS.

The key holder owns the secret key and the activations; the adapter plane owns A, B and
the scaling s, and a context with no key of any kind. Only bytes pass between them.

Layout, rotation-free: one token per slot. Ciphertext j holds feature j of up to N/2
tokens, so A x is a weighted sum of ciphertexts by plaintext scalars and B(Ax) another:
no rotation or relinearisation key, and no rescaling (depth two in plaintext products,
so a result carries scale 2^(3·40) = 2^120 inside the 140 bits of data primes).
N = 8192, primes [60, 40, 40, 60]: log Q = 200, under the HE standard's 218 for 128 bits.

What each side learns is in docs/he-lora.md; in short: an honest-but-curious plane learns
token and call counts, not x; the key holder recovers ΔW exactly from any one answer (the
result is not re-randomised, and the key holder knows its own ciphertexts' noise).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from runners.n2he.ckks import Params
from tgsp.errors import InputError

PARAMS = Params(poly_modulus_degree=8192, coeff_mod_bit_sizes=(60, 40, 40, 60), scale_bits=40)
# A result decodes while |value| * 2^120 stays under half the 140-bit data modulus: |y| < 2^19.
# The key holder refuses activations above X_MAX and the plane an adapter whose gain could
# carry X_MAX past 2^17 (a factor 4 of margin).
X_MAX = 2.0 ** 10
GAIN_MAX = 2.0 ** 7
# Plaintext scalars under 2^-41 encode to zero, and SEAL refuses a product with zero.
_ZERO = 2.0 ** -(PARAMS.scale_bits + 1)

Chunk = list  # of serialized ciphertexts, one per feature (or None: exactly zero)


def _ts():
    import tenseal as ts

    return ts


class KeyHolder:
    """The secret key: encrypts activations, decrypts deltas."""

    def __init__(self):
        ts = _ts()
        PARAMS.check()
        self._ctx = ts.context(ts.SCHEME_TYPE.CKKS, PARAMS.poly_modulus_degree,
                               coeff_mod_bit_sizes=list(PARAMS.coeff_mod_bit_sizes),
                               encryption_type=ts.ENCRYPTION_TYPE.SYMMETRIC)
        self._ctx.global_scale = 2.0 ** PARAMS.scale_bits
        self._ctx.auto_rescale = False

    def plane_context(self) -> bytes:
        """The parameters alone: no secret, public, relinearisation or Galois key."""
        return self._ctx.serialize(save_public_key=False, save_secret_key=False, save_galois_keys=False,
                                   save_relin_keys=False)

    def encrypt(self, x: np.ndarray) -> list[Chunk]:
        """``x`` [tokens, features] as chunks of N/2 tokens, one ciphertext per feature."""
        ts = _ts()
        if x.ndim != 2 or not np.isfinite(x).all() or (x.size and np.abs(x).max() > X_MAX):
            raise InputError(f"HE-LoRA takes finite activations of at most {X_MAX:g} in magnitude",
                             hint="this model's activations do not fit the CKKS parameters; run without --he")
        return [[ts.ckks_vector(self._ctx, x[lo:lo + PARAMS.slots, j].tolist()).serialize()
                 for j in range(x.shape[1])] for lo in range(0, x.shape[0], PARAMS.slots)]

    def decrypt(self, chunks: list[Chunk], tokens: int) -> np.ndarray:
        """The delta [tokens, outputs] from the plane's answer to ``encrypt``."""
        ts = _ts()
        parts = []
        for n, chunk in enumerate(chunks):
            rows = min(PARAMS.slots, tokens - n * PARAMS.slots)
            parts.append(np.array([np.zeros(rows) if c is None else ts.ckks_vector_from(self._ctx, c).decrypt()[:rows]
                                   for c in chunk]).T)
        return np.concatenate(parts) if parts else np.zeros((0, 0))


@dataclass(frozen=True)
class Adapter:
    """One module's adapter on the plane: A [r, d] and s·B [outputs, r]."""

    a: np.ndarray
    sb: np.ndarray


class AdapterPlane:
    """The adapter: computes s·B(A x) on ciphertexts it cannot decrypt."""

    def __init__(self, context: bytes, adapters: dict[str, Adapter]):
        ts = _ts()
        self._ctx = ts.context_from(context)
        if self._ctx.is_private():
            raise InputError("the adapter plane was handed a secret key", hint="send it KeyHolder.plane_context()")
        for name, ad in adapters.items():
            gain = np.abs(ad.sb).sum(axis=1).max(initial=0) * np.abs(ad.a).sum(axis=1).max(initial=0)
            if gain > GAIN_MAX:
                raise InputError(f"the adapter of {name} has gain {gain:.3g}, above the {GAIN_MAX:g} the CKKS "
                                 "parameters decode", hint="run without --he")
        self._adapters = adapters
        self._input: list[list] = []

    def receive(self, chunks: list[Chunk]) -> None:
        """One encrypted input, which every module that reads it answers (``delta``)."""
        ts = _ts()
        self._input = [[ts.ckks_vector_from(self._ctx, c) for c in chunk] for chunk in chunks]

    def delta(self, name: str) -> list[Chunk]:
        """Module ``name``'s encrypted delta for the input last received."""
        ad = self._adapters[name]
        out = []
        for xs in self._input:
            u = [_combine(xs, row) for row in ad.a]
            out.append([None if y is None else y.serialize() for y in (_combine(u, row) for row in ad.sb)])
        return out


def _combine(vectors: list, weights: np.ndarray):
    """Σ w_j·v_j over the terms that are not exactly zero (None when every term is)."""
    acc = None
    for v, w in zip(vectors, weights.tolist()):
        if v is None or abs(w) < _ZERO:
            continue
        term = v * w
        acc = term if acc is None else acc.add_(term)
    return acc
