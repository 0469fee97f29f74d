"""Key lineages: TUF-style rotation chains, revocations, public key files.

A signing identity starts at a root key (version 1). Rotating to version
k+1 writes a statement naming the new public key and the previous key id,
signed by *both* the old and the new key (each with both algorithms). A
verifier that knows any version walks the chain forward; a skipped version,
a missing signature or a fork against what it already trusts breaks it.

A revocation is a statement, signed by the revoked key itself or by a later
version of its lineage, with the time from which signatures no longer count.
All of this is pure: it takes and returns objects and bytes.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from . import clock, dsse
from .canonical import encode, is_int, parse
from .errors import FormatError, RevokedError, RotationError, SignatureError
from .keys import RECIPIENT, SIGNING, PrivateKey, PublicKey

ROTATION = "tgflow-rotation/1"
REVOCATION = "tgflow-revocation/1"
PUBLIC_FILE = "tgflow-public-key/1"
MAX_CHAIN = 1000
_ROTATION_FIELDS = {"type", "name", "version", "previous", "public", "time"}


@dataclass(frozen=True)
class KeyVersion:
    version: int
    key: PublicKey
    time: str


@dataclass(frozen=True)
class Lineage:
    root: PublicKey
    chain: tuple[dict[str, Any], ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {"root": self.root.to_dict(), "chain": list(self.chain)}

    @classmethod
    def from_dict(cls, obj: Any) -> Lineage:
        if not isinstance(obj, dict) or set(obj) != {"root", "chain"} or not isinstance(obj["chain"], list):
            raise FormatError("lineage must be {root, chain}")
        if len(obj["chain"]) > MAX_CHAIN:
            raise FormatError("rotation chain is too long")
        root = PublicKey.from_dict(obj["root"])
        if root.kind != SIGNING:
            raise FormatError("only signing keys have a lineage")
        return cls(root, tuple(obj["chain"]))

    def walk(self) -> list[KeyVersion]:
        """Validate every link; return versions 1..N. Raises RotationError."""
        versions = [KeyVersion(1, self.root, "")]
        for position, env_obj in enumerate(self.chain):
            expected = position + 2
            prev = versions[-1]
            try:
                env = dsse.parse(env_obj, expect_type=dsse.ROTATION_TYPE, max_signatures=4)
                stmt = parse(env.payload, what="rotation statement", canonical=True)
                if not isinstance(stmt, dict) or stmt.get("type") != ROTATION:
                    raise FormatError("not a rotation statement")
                if set(stmt) != _ROTATION_FIELDS or not isinstance(stmt["name"], str):
                    raise FormatError(f"a rotation statement has exactly: {', '.join(sorted(_ROTATION_FIELDS))}")
                if stmt.get("version") != expected:
                    raise RotationError(f"rotation chain skips from version {prev.version} to {stmt.get('version')!r}")
                if stmt.get("previous") != prev.key.keyid:
                    raise RotationError(f"rotation to version {expected} does not follow version {prev.version}")
                new = PublicKey.from_dict(stmt.get("public"))
                if new.kind != SIGNING or len(env.signatures) != 4:
                    raise RotationError(f"rotation to version {expected} must carry exactly 4 signatures")
                time = stmt.get("time")
                moment = clock.parse(time, what="rotation time")
                if prev.time and moment < clock.parse(prev.time):
                    raise RotationError(f"rotation to version {expected} is dated before the one before it")
                prev.key.verify_hybrid(env.payload_type, env.payload, env.sig_map())
                new.verify_hybrid(env.payload_type, env.payload, env.sig_map())
            except RotationError:
                raise
            except (FormatError, SignatureError) as exc:
                raise RotationError(f"rotation to version {expected} is invalid: {exc}") from None
            versions.append(KeyVersion(expected, new, time))
        return versions


def rotation_statement(name: str, old: PrivateKey, new: PrivateKey, version: int, when: datetime) -> dict[str, Any]:
    payload = encode({
        "type": ROTATION,
        "name": name,
        "version": version,
        "previous": old.public.keyid,
        "public": new.public.to_dict(),
        "time": clock.fmt(when),
    })
    sigs = old.sign_hybrid(dsse.ROTATION_TYPE, payload) + new.sign_hybrid(dsse.ROTATION_TYPE, payload)
    return dsse.Envelope(dsse.ROTATION_TYPE, payload, tuple(sigs)).to_dict()


# --- revocation --------------------------------------------------------------
@dataclass(frozen=True)
class Revocation:
    keyid: str
    revoked_at: datetime
    reason: str
    root_keyid: str
    # The signer's chain as the revocation carries it: trusted chain knowledge
    # for fork detection (never a source of trust by itself).
    lineage: tuple[KeyVersion, ...] = ()


def revocation_statement(keyid: str, reason: str, when: datetime, by: PrivateKey, by_lineage: Lineage,
                         branch: Lineage | None = None) -> dict[str, Any]:
    """``branch`` revokes a key on a forked branch of the signer's own root
    (made with a stolen older version): it is the chain that holds the key."""
    body = {
        "type": REVOCATION,
        "keyid": keyid,
        "revoked_at": clock.fmt(when),
        "reason": reason,
        "by": by_lineage.to_dict(),
    }
    if branch is not None:
        body["branch"] = branch.to_dict()
    payload = encode(body)
    return dsse.Envelope(dsse.REVOCATION_TYPE, payload, tuple(by.sign_hybrid(dsse.REVOCATION_TYPE, payload))).to_dict()


def parse_revocation(obj: Any) -> Revocation:
    """Check a revocation is authentic: signed by the newest key of a valid
    lineage that contains the revoked key. Raises FormatError otherwise."""
    try:
        env = dsse.parse(obj, expect_type=dsse.REVOCATION_TYPE, max_signatures=2)
        stmt = parse(env.payload, what="revocation", canonical=True)
        if not isinstance(stmt, dict) or stmt.get("type") != REVOCATION or not isinstance(stmt.get("reason"), str):
            raise FormatError("not a revocation statement")
        if set(stmt) - {"type", "keyid", "revoked_at", "reason", "by", "branch"}:
            raise FormatError("revocation has unknown fields")
        versions = Lineage.from_dict(stmt.get("by")).walk()
        holder = versions
        if "branch" in stmt:  # a fork of the same root, revoked by the root's owner
            holder = Lineage.from_dict(stmt["branch"]).walk()
            if holder[0].key.keyid != versions[0].key.keyid:
                raise FormatError("revocation branch does not share the signer's root")
        if stmt.get("keyid") not in {v.key.keyid for v in holder}:
            raise FormatError("revocation names a key outside the signer's lineage")
        versions[-1].key.verify_hybrid(env.payload_type, env.payload, env.sig_map())
        return Revocation(stmt["keyid"], clock.parse(stmt.get("revoked_at")), stmt["reason"], versions[0].key.keyid,
                          tuple(versions))
    except (FormatError, SignatureError) as exc:
        raise FormatError(f"invalid revocation: {exc}") from None


# --- vetting a chain against what a verifier knows --------------------------------
def _fork_at(a: list[KeyVersion] | tuple[KeyVersion, ...], b) -> int | None:
    return next((x.version for x, y in zip(a, b) if x.key.keyid != y.key.keyid), None)


def vet(versions: list[KeyVersion], trusted: list[list[KeyVersion]], revocations, label: str) -> bool:
    """Check a walked chain against the verifier's knowledge; True if its root is trusted.

    - It must agree with every trusted chain of the same root, under any name,
      and with the chain every revocation of that root carries (fork detection).
    - A rotation made by a revoked key counts only if the verifier already
      trusted it (it is in a trusted chain) and it is dated before the
      revocation; whatever time an unknown one claims, it is refused.
    """
    root = versions[0].key.keyid
    same = [t for t in trusted if t[0].key.keyid == root]
    for known in same + [list(r.lineage) for r in revocations if r.root_keyid == root and r.lineage]:
        at = _fork_at(versions, known)
        if at is not None:
            raise RotationError(f"{label}: its rotation chain forks from a trusted one at version {at}")
    known_links = {(v.version, v.key.keyid) for t in same for v in t}
    revoked = {r.keyid: r for r in revocations}
    for prev, nxt in zip(versions, versions[1:]):
        r = revoked.get(prev.key.keyid)
        if r is None:
            continue
        if (nxt.version, nxt.key.keyid) not in known_links:
            raise RevokedError(f"{label}: rotation to version {nxt.version} was made by a key revoked at "
                               f"{clock.fmt(r.revoked_at)} and was not trusted before",
                               hint="import the key owner's current public key file")
        if clock.parse(nxt.time) >= r.revoked_at:
            raise RevokedError(f"{label}: rotation to version {nxt.version} was signed by a key "
                               f"revoked at {clock.fmt(r.revoked_at)}")
    return bool(same)


# --- public key files ----------------------------------------------------------
@dataclass(frozen=True)
class PublicKeyFile:
    """What ``key export-public`` writes and ``key import`` reads."""

    name: str
    kind: str
    version: int
    created: str
    key: PublicKey
    lineage: Lineage | None  # signing keys only

    @property
    def keyid(self) -> str:
        return self.key.keyid

    def to_dict(self) -> dict[str, Any]:
        out = {
            "type": PUBLIC_FILE,
            "name": self.name,
            "kind": self.kind,
            "keyid": self.keyid,
            "version": self.version,
            "created": self.created,
            "public": self.key.to_dict()["public"],
        }
        if self.lineage is not None:
            out["lineage"] = self.lineage.to_dict()
        return out

    @classmethod
    def from_dict(cls, obj: Any) -> PublicKeyFile:
        if not isinstance(obj, dict) or obj.get("type") != PUBLIC_FILE:
            raise FormatError(f"not a tgflow public key file (type must be {PUBLIC_FILE})")
        kind, name, version = obj.get("kind"), obj.get("name"), obj.get("version")
        if kind not in (SIGNING, RECIPIENT) or not isinstance(name, str) or not is_int(version):
            raise FormatError("public key file needs kind, name and version")
        key = PublicKey.from_dict({"kind": kind, "public": obj.get("public")})
        if obj.get("keyid") != key.keyid:
            raise FormatError("public key file's keyid does not match its key")
        clock.parse(obj.get("created"), what="created")
        lineage = None
        if kind == SIGNING:
            lineage = Lineage.from_dict(obj.get("lineage"))
            versions = lineage.walk()
            if versions[-1].key.keyid != key.keyid or versions[-1].version != version:
                raise FormatError("public key file's lineage does not end at its key")
        elif "lineage" in obj:
            raise FormatError("recipient keys have no lineage")
        return cls(name, kind, version, obj["created"], key, lineage)
