"""Key material: hybrid signing keys and hybrid recipient keys.

A *signing* key is an Ed25519 key plus an ML-DSA-65 key; a *recipient* key
is an X25519 key plus an ML-KEM-768 key. Each pair is one identity with one
key id: the SHA-256 of the canonical JSON of its kind and public parts. Each
signing component also has its own key id, used as the DSSE ``keyid``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from . import _kem, _sig, dsse
from .canonical import b64d, b64e, encode, parse, sha256_hex
from .errors import FormatError, SignatureError

SIGNING = "signing"
RECIPIENT = "recipient"
KINDS = (SIGNING, RECIPIENT)
ALGS = {SIGNING: _sig.ALGORITHMS, RECIPIENT: (_kem.X25519, _kem.MLKEM768)}
_PUBLIC_SIZES = {**_sig.PUBLIC_SIZES, **_kem.PUBLIC_SIZES}


def component_keyid(alg: str, public: bytes) -> str:
    return sha256_hex(encode({"alg": alg, "public": b64e(public)}))


@dataclass(frozen=True)
class PublicKey:
    kind: str
    public: dict[str, bytes] = field(hash=False)

    @property
    def keyid(self) -> str:
        return sha256_hex(encode(self.to_dict()))

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "public": {alg: b64e(raw) for alg, raw in sorted(self.public.items())}}

    @classmethod
    def from_dict(cls, obj: Any) -> PublicKey:
        if not isinstance(obj, dict) or obj.get("kind") not in KINDS or not isinstance(obj.get("public"), dict):
            raise FormatError("public key must be {kind, public}")
        kind = obj["kind"]
        if set(obj["public"]) != set(ALGS[kind]):
            raise FormatError(f"a {kind} key needs exactly {', '.join(ALGS[kind])}")
        public = {}
        for alg, text in obj["public"].items():
            raw = b64d(text, what=f"{alg} public key")
            if len(raw) != _PUBLIC_SIZES[alg]:
                raise FormatError(f"{alg} public key has {len(raw)} bytes, expected {_PUBLIC_SIZES[alg]}")
            public[alg] = raw
        return cls(kind, public)

    def component_ids(self) -> dict[str, str]:
        return {alg: component_keyid(alg, raw) for alg, raw in self.public.items()}

    def verify_hybrid(self, payload_type: str, payload: bytes, sigs: dict[str, bytes]) -> None:
        """Require a valid signature from *every* component; raise otherwise."""
        if self.kind != SIGNING:
            raise SignatureError("a recipient key cannot sign")
        message = dsse.pae(payload_type, payload)
        for alg, kid in self.component_ids().items():
            sig = sigs.get(kid)
            if sig is None:
                raise SignatureError(f"missing {alg} signature from key {self.keyid[:16]}")
            if not _sig.verify(alg, self.public[alg], message, sig):
                raise SignatureError(f"invalid {alg} signature from key {self.keyid[:16]}")


SOFTWARE = "software"


class SoftwareComponent:
    """One signing algorithm's private key held in this process."""

    custody = SOFTWARE

    def __init__(self, alg: str, seed: bytes) -> None:
        self.alg, self._seed = alg, seed
        self.public_raw = _sig.public_from_seed(alg, seed)

    def sign(self, message: bytes) -> bytes:
        return _sig.sign(self.alg, self._seed, message)


class HybridSigningKey:
    """A signing key whose two halves may live in different places (a token
    for Ed25519, the sealed keyring for ML-DSA-65, say). It signs like
    ``PrivateKey``: one DSSE signature per algorithm over the same PAE bytes."""

    kind = SIGNING

    def __init__(self, components: dict[str, Any]) -> None:
        if set(components) != set(_sig.ALGORITHMS):
            raise FormatError(f"a signing key needs exactly {', '.join(_sig.ALGORITHMS)}")
        self._components = components

    @property
    def public(self) -> PublicKey:
        return PublicKey(SIGNING, {alg: c.public_raw for alg, c in self._components.items()})

    @property
    def keyid(self) -> str:
        return self.public.keyid

    @property
    def custody(self) -> dict[str, str]:
        return {alg: c.custody for alg, c in sorted(self._components.items())}

    def sign_hybrid(self, payload_type: str, payload: bytes) -> list[tuple[str, bytes]]:
        message = dsse.pae(payload_type, payload)
        ids = self.public.component_ids()
        return [(ids[alg], self._components[alg].sign(message)) for alg in _sig.ALGORITHMS]


def software_seeds(kind: str, data: bytes, algs: set[str]) -> dict[str, bytes]:
    """The sealed plaintext of a key version: JCS ``{alg: base64 seed}`` for ``algs``."""
    obj = parse(data, what="private key", canonical=True)
    if not isinstance(obj, dict) or set(obj) != algs or not algs <= set(ALGS[kind]):
        raise FormatError("private key material is malformed")
    return {alg: b64d(v, what=alg) for alg, v in obj.items()}


@dataclass(frozen=True)
class PrivateKey:
    kind: str
    seeds: dict[str, bytes] = field(repr=False, hash=False)

    @classmethod
    def generate(cls, kind: str) -> PrivateKey:
        if kind == SIGNING:
            return cls(kind, {alg: _sig.new_seed(alg) for alg in _sig.ALGORITHMS})
        if kind == RECIPIENT:
            return cls(kind, _kem.new_seeds())
        raise ValueError(kind)

    @property
    def public(self) -> PublicKey:
        if self.kind == SIGNING:
            return PublicKey(SIGNING, {alg: _sig.public_from_seed(alg, s) for alg, s in self.seeds.items()})
        return PublicKey(RECIPIENT, _kem.public_from_seeds(self.seeds))

    def sign_hybrid(self, payload_type: str, payload: bytes) -> list[tuple[str, bytes]]:
        """One DSSE signature per component, over the same PAE bytes."""
        message = dsse.pae(payload_type, payload)
        ids = self.public.component_ids()
        return [(ids[alg], _sig.sign(alg, self.seeds[alg], message)) for alg in _sig.ALGORITHMS]

    @property
    def keyid(self) -> str:
        return self.public.keyid

    @property
    def custody(self) -> dict[str, str]:
        return {alg: SOFTWARE for alg in sorted(self.seeds)}

    def unwrap(self, wrapped: bytes) -> bytes:
        """The Identity interface: recover a package's file key (opaque on failure)."""
        return _kem.unwrap(wrapped, self.seeds)

    # Seeds are stored as canonical JSON so the sealed blob is self-describing.
    def secret_bytes(self) -> bytes:
        return encode({alg: b64e(s) for alg, s in sorted(self.seeds.items())})

    @classmethod
    def from_secret_bytes(cls, kind: str, data: bytes) -> PrivateKey:
        return cls(kind, software_seeds(kind, data, set(ALGS[kind])))
