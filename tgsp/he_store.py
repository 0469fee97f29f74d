"""Homomorphic-encryption (CKKS) keys in the keyring: bytes only, no TenSEAL here.

    he/<name>.json               an own HE key: its versions, each with params and context id
    he/<name>/v<N>.sealed        version N's secret context, sealed (Argon2id + AES-GCM)
    he/trusted/<name>.json       an HE public file (own, or imported from the key holder)

A context id is the SHA-256 of the public context's bytes; an update names the
context it was encrypted under by it. The sealed blob's associated data binds
it to the key's name, version and context id, so it cannot be moved onto
another public context. Making and checking contexts is runners/n2he/ckks.py's.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from . import _seal, clock
from .atomic import write_bytes
from .canonical import b64d, b64e, encode, is_int, parse
from .errors import FormatError, InputError, KeyExistsError, KeyNotFoundError, KeyringError
from .inputfile import read_input
from .keyring_trust import check_name, is_path_ref

KIND = "he"
OWN_TYPE, PUBLIC_TYPE = "tgflow-he-key/1", "tgflow-he-public/1"
MAX_PUBLIC_FILE = 16 << 20
MAX_SEALED_FILE = 32 << 20
_CONTEXT_ID = re.compile(r"sha256:[0-9a-f]{64}\Z")
Passphrase = Callable[[], str]


def context_id(public: bytes) -> str:
    return "sha256:" + hashlib.sha256(public).hexdigest()


@dataclass(frozen=True)
class HEPublic:
    """An HE public file: the public context (no secret key) and what it is."""

    name: str
    version: int
    created: str
    params: dict[str, Any]
    context: bytes

    @property
    def context_id(self) -> str:
        return context_id(self.context)

    @property
    def keyid(self) -> str:
        return self.context_id[7:]

    def to_dict(self) -> dict[str, Any]:
        return {"type": PUBLIC_TYPE, "name": self.name, "kind": KIND, "version": self.version, "created": self.created,
                "params": self.params, "context_id": self.context_id, "context": b64e(self.context)}

    @classmethod
    def from_dict(cls, obj: Any) -> HEPublic:
        if not isinstance(obj, dict) or obj.get("type") != PUBLIC_TYPE:
            raise FormatError("not a tgflow HE public file")
        name, version, created, params = obj.get("name"), obj.get("version"), obj.get("created"), obj.get("params")
        if not isinstance(name, str) or not is_int(version) or version < 1 or not isinstance(created, str) \
                or not isinstance(params, dict):
            raise FormatError("HE public file is missing its name, version, created time or params")
        pub = cls(name, version, created, params, b64d(obj.get("context"), what="context"))
        if obj.get("context_id") != pub.context_id:
            raise FormatError("HE public file's context id does not match its context")
        return pub

    @property
    def created_at(self):
        return clock.parse(self.created)


def load_public(path: str | Path) -> HEPublic:
    p = Path(path)
    data = read_input(p, "HE public file", max_bytes=MAX_PUBLIC_FILE)
    try:
        return HEPublic.from_dict(parse(data, what=str(p)))
    except FormatError as exc:
        raise InputError(f"{p}: {exc}", hint="give the file from: tgflow key export-public NAME") from None


def is_public_file(path: str | Path) -> bool:
    """Whether ``path`` looks like an HE public file (its first bytes name the type)."""
    try:
        with open(path, "rb") as f:
            head = f.read(256)
    except OSError:
        return False
    return PUBLIC_TYPE.encode() in head


class HEKeys:
    """The keyring's HE keys; changes go under the keyring's lock and into its audit log."""

    def __init__(self, keyring) -> None:
        self.kr = keyring
        self.root = keyring.home / "he"

    # --- paths ------------------------------------------------------------------
    def _own(self, name: str) -> Path:
        return self.root / f"{check_name(name)}.json"

    def _trusted(self, name: str) -> Path:
        return self.root / "trusted" / f"{check_name(name)}.json"

    def _sealed(self, name: str, version: int) -> Path:
        return self.root / name / f"v{version}.sealed"

    @staticmethod
    def _aad(name: str, version: int, cid: str) -> bytes:
        return encode({"kind": KIND, "name": name, "version": version, "context_id": cid})

    def is_own(self, name: str) -> bool:
        return self._own(name).exists()

    def exists(self, name: str) -> bool:
        return self._own(name).exists() or self._trusted(name).exists()

    # --- own keys -----------------------------------------------------------------
    def _load(self, name: str) -> dict[str, Any]:
        path = self._own(name)
        if not path.exists():
            raise KeyNotFoundError(f"no own HE key named {name!r} in {self.kr.home}",
                                   hint="generate one: tgflow key generate NAME --type he")
        obj = parse(read_input(path, "HE key file", max_bytes=1 << 20, error=KeyringError), what=str(path))
        versions = obj.get("versions") if isinstance(obj, dict) else None
        if not isinstance(obj, dict) or obj.get("type") != OWN_TYPE or obj.get("name") != name \
                or not isinstance(versions, list) or not versions:
            raise KeyringError(f"{path} is not a tgflow HE key file", hint="restore it from backup")
        for n, v in enumerate(versions, 1):
            if not isinstance(v, dict) or v.get("version") != n or not isinstance(v.get("context_id"), str) \
                    or not _CONTEXT_ID.match(v["context_id"]):
                raise KeyringError(f"HE key file {path} was altered at version {n}", hint="restore it from backup")
        return obj

    def add_version(self, name: str, params: dict[str, Any], public: bytes, secret: bytes,
                    passphrase: Passphrase, *, new: bool) -> HEPublic:
        """Store a new key (``new``) or a new version of ``name``: its secret context sealed, its
        public context trusted. The caller made both (runners.n2he.ckks)."""
        with self.kr._locked():
            trusted = self.public(name) if self._trusted(name).exists() else None
            if new and (self.is_own(name) or self.kr._key_path(name).exists() or
                        (trusted is not None and trusted.context_id != context_id(public))):
                raise KeyExistsError(f"a key named {name!r} already exists", hint="pick another name, or rotate it")
            obj = {"type": OWN_TYPE, "name": name, "versions": []} if new else self._load(name)
            if not new:
                self.secret(name, passphrase, obj["versions"][-1]["context_id"], _obj=obj)  # prove the passphrase
            number, cid = len(obj["versions"]) + 1, context_id(public)
            sealed = _seal.seal(secret, passphrase(), self._aad(name, number, cid))
            self._sealed(name, number).parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            write_bytes(self._sealed(name, number), encode(sealed) + b"\n", mode=0o600)
            pub = HEPublic(name, number, clock.fmt(self.kr.now()), params, public)
            obj["versions"].append({"version": number, "created": pub.created, "context_id": cid, "params": params})
            write_bytes(self._own(name), (json.dumps(obj, indent=2) + "\n").encode(), mode=0o600)
            self._write_trusted(pub)
            self.kr._audit("generate" if new else "rotate", name, pub.keyid, {"kind": KIND, "version": number,
                                                                              "params": params})
        return pub

    def secret(self, name: str, passphrase: Passphrase, cid: str, *, _obj: dict | None = None) -> bytes:
        """The secret context of the version of ``name`` whose context id is ``cid``."""
        obj = _obj or self._load(name)
        match = [v for v in obj["versions"] if v["context_id"] == cid]
        if not match:
            raise KeyringError(f"HE key {name} has no version with context {cid[:23]}",
                               hint="decrypt with the HE key the sites encrypted to (see the package's he.context)")
        v = match[0]
        blob = parse(read_input(self._sealed(name, v["version"]), "sealed HE key", max_bytes=MAX_SEALED_FILE,
                                error=KeyringError), what="sealed HE key")
        try:
            return _seal.open_sealed(blob, passphrase(), self._aad(name, v["version"], cid))
        except FormatError as exc:
            raise KeyringError(f"HE key {name}: {exc}", hint="restore the key from backup") from None

    def versions(self, name: str) -> list[dict[str, Any]]:
        return self._load(name)["versions"]

    # --- public files -------------------------------------------------------------
    def _write_trusted(self, pub: HEPublic) -> None:
        self._trusted(pub.name).parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        write_bytes(self._trusted(pub.name), (json.dumps(pub.to_dict()) + "\n").encode())

    def public(self, ref: str) -> HEPublic:
        """A path (with '/' or ending in '.json') is an HE public file; else a name in the keyring."""
        if is_path_ref(ref):
            return load_public(ref)
        path = self._trusted(ref)
        if not path.exists():
            raise KeyNotFoundError(f"no HE key named {ref!r} in {self.kr.home}",
                                   hint="import the key holder's public context: tgflow key import FILE")
        return load_public(path)

    def import_public(self, path: str | Path, name: str | None = None,
                      check: Callable[[HEPublic], None] = lambda pub: None) -> HEPublic:
        """Trust an HE public file; ``check`` (runners.n2he) refuses weak parameters first."""
        pub = load_public(path)
        check(pub)
        pub = HEPublic(check_name(name or pub.name), pub.version, pub.created, pub.params, pub.context)
        with self.kr._locked():
            if self.kr._key_path(pub.name).exists() or (self.kr.home / "trust" / f"{pub.name}.json").exists():
                raise KeyExistsError(f"a signing or recipient key named {pub.name!r} exists",
                                     hint="import it under another name with --name")
            if self._own(pub.name).exists():
                raise KeyExistsError(f"{pub.name!r} is an own HE key here; it is not replaced by an imported file")
            cur = self.public(pub.name) if self._trusted(pub.name).exists() else None
            if cur is not None and cur.version > pub.version:
                raise KeyExistsError(f"HE key {pub.name} version {cur.version} is already trusted; {path} is version "
                                     f"{pub.version}, an older one", hint="import the newest export")
            self._write_trusted(pub)
            self.kr._audit("import", pub.name, pub.keyid, {"kind": KIND, "version": pub.version})
        return pub

    def listed(self) -> list[tuple[HEPublic, bool]]:
        """Every trusted HE public file, and whether its secret is in this keyring."""
        folder = self.root / "trusted"
        if not folder.is_dir():
            return []
        out = []
        for p in sorted(folder.glob("*.json")):
            pub = load_public(p)
            out.append((pub, self.is_own(pub.name)))
        return out
