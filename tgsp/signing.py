"""Making and checking the hybrid signatures on a manifest, under a trust policy.

The manifest names each signer's key (both public halves) and its lineage,
and says that every signer must sign with every algorithm. So a verifier
reads the requirement from the signed bytes themselves: stripping either
signature, or adding one from a key the manifest does not name, fails.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol, Sequence

from . import clock, dsse, manifest as mf
from .errors import RevokedError, RotationError, SignatureError, TrustError
from .keys import SIGNING, PublicKey
from .lineage import KeyVersion, Lineage, PublicKeyFile, Revocation, vet


class SigningKey(Protocol):
    """What a key must do to sign: software (``PrivateKey``), or split across
    a token and the keyring (``HybridSigningKey``). Key material stays inside."""

    @property
    def public(self) -> PublicKey: ...

    @property
    def custody(self) -> dict[str, str]: ...

    def sign_hybrid(self, payload_type: str, payload: bytes) -> list[tuple[str, bytes]]: ...


class Identity(Protocol):
    """What a recipient key must do to open a package: unwrap its file key."""

    kind: str

    @property
    def keyid(self) -> str: ...

    def unwrap(self, wrapped: bytes) -> bytes: ...


@dataclass(frozen=True)
class Signer:
    """The signer interface the package code uses: a named, versioned key
    with its lineage. ``sign`` returns the DSSE signatures, one per algorithm."""

    name: str
    version: int
    key: SigningKey
    lineage: Lineage

    @property
    def keyid(self) -> str:
        return self.key.public.keyid

    @property
    def public(self) -> PublicKey:
        return self.key.public

    @property
    def algorithms(self) -> tuple[str, ...]:
        return tuple(sorted(self.key.public.public))

    @property
    def custody(self) -> dict[str, str]:
        return self.key.custody

    def sign(self, payload_type: str, payload: bytes) -> list[tuple[str, bytes]]:
        return self.key.sign_hybrid(payload_type, payload)

    def manifest_entry(self, when: datetime) -> dict[str, Any]:
        return {
            "keyid": self.keyid,
            "name": self.name,
            "version": self.version,
            "signed_at": clock.fmt(when),
            "public": self.key.public.to_dict()["public"],
            "lineage": self.lineage.to_dict(),
        }


def sign_manifest(payload: bytes, signers: Sequence[Signer]) -> list[tuple[str, bytes]]:
    sigs: list[tuple[str, bytes]] = []
    for s in signers:
        sigs.extend(s.sign(dsse.MANIFEST_TYPE, payload))
    return sigs


@dataclass
class TrustPolicy:
    """What a verifier trusts. Empty ``trusted`` trusts nobody (fail closed)."""

    trusted: Sequence[PublicKeyFile] = ()
    revocations: Sequence[Revocation] = ()
    now: clock.Clock = clock.utcnow
    min_version: int | None = None
    rollback_state: dict[str, Any] | None = None
    route: str | None = None  # pin: only packages of this route
    kind: str | None = None  # pin: only packages of this kind
    require_hardware: str | None = None  # None, "ed25519" or "all": custody every trusted signer must show
    notes: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        mf.check_fields(self.route, self.kind, self.min_version)  # a pin that could never match is bad input

    def trusted_lineages(self) -> list[list[KeyVersion]]:
        return [t.lineage.walk() for t in self.trusted if t.kind == SIGNING and t.lineage]


def check(env: dsse.Envelope, manifest: dict[str, Any], policy: TrustPolicy,
          trusted_out: set[str] | None = None) -> list[str]:
    """Raise unless every named signer signed with both algorithms and at
    least one of them is trusted and unrevoked. Returns notes for the report;
    ``trusted_out`` receives the key ids of the trusted signers."""
    signers = manifest["signers"]
    if not signers:
        raise SignatureError("package is not signed", hint="sign it: tgflow tgsp sign PKG --key KEY")
    sigs = env.sig_map()
    named: set[str] = set()
    revoked = {r.keyid: r for r in policy.revocations}
    trusted = policy.trusted_lineages()
    notes, trusted_names, untrusted = [], [], []
    trusted_ids: dict[str, str] = {}
    for s in signers:
        label = f"{s['name']} ({s['keyid'][:16]})"
        versions = Lineage.from_dict(s["lineage"]).walk()
        key = PublicKey.from_dict({"kind": SIGNING, "public": s["public"]})
        if versions[-1].key.keyid != key.keyid or key.keyid != s["keyid"] or versions[-1].version != s["version"]:
            raise RotationError(f"signer {label}: lineage does not end at the signing key")
        key.verify_hybrid(env.payload_type, env.payload, sigs)
        named.update(key.component_ids().values())
        signed_at = clock.parse(s["signed_at"])
        made = versions[-1].time  # version 1 has no time of its own
        if made and signed_at < clock.parse(made):
            raise SignatureError(f"signer {label}: signed at {s['signed_at']}, before its key version "
                                 f"{versions[-1].version} existed ({made})")
        r = revoked.get(key.keyid)  # a revoked key signs nothing after its revocation
        if r is not None and signed_at >= r.revoked_at:
            raise RevokedError(f"signer {label} was revoked at {clock.fmt(r.revoked_at)} ({r.reason}); "
                               f"package signed {s['signed_at']}")
        if r is not None:
            notes.append(f"signer {label} was revoked later, at {clock.fmt(r.revoked_at)}")
        if vet(versions, trusted, policy.revocations, f"signer {label}"):
            trusted_names.append(label)
            trusted_ids[s["keyid"]] = label
        else:
            untrusted.append(label)
    extra = [k for k in sigs if k not in named]
    if extra:
        raise SignatureError(f"envelope holds a signature from key {extra[0][:16]} that the manifest does not name")
    if not trusted_names:
        raise TrustError(f"no trusted signer: {', '.join(untrusted)} is not in the trust store",
                         hint="import the signer's public key (tgflow key import FILE) or pass --trusted")
    _check_custody(manifest, policy.require_hardware, trusted_ids)
    if trusted_out is not None:
        trusted_out.update(trusted_ids)
    if untrusted:
        notes.append(f"co-signer(s) not trusted here: {', '.join(untrusted)}")
    notes.insert(0, f"signed by {', '.join(trusted_names)} with ed25519 + ml-dsa-65")
    return notes


HARDWARE_LEVELS = {"ed25519": ("ed25519",), "all": ("ed25519", "ml-dsa-65")}


def _check_custody(manifest: dict[str, Any], level: str | None, trusted: dict[str, str]) -> None:
    """With --require-hardware, every trusted signer's signed custody record
    must say its key (or both halves, for "all") is held in a token."""
    if level is None:
        return
    custody = manifest.get("custody") or {}
    for keyid, label in trusted.items():
        held = custody.get(keyid, {})
        soft = [alg for alg in HARDWARE_LEVELS[level] if held.get(alg) != "pkcs11"]
        if soft:
            raise TrustError(f"signer {label}: its {' and '.join(soft)} key is not held in hardware "
                             f"(custody {held.get(soft[0], 'software') if held else 'not recorded'}); "
                             f"--require-hardware {level}",
                             hint="sign with a PKCS#11 key (tgflow key generate NAME --pkcs11 URI); 'all' also needs "
                                  "a token that holds ML-DSA-65, which tgflow does not drive yet (docs/keys.md)")
