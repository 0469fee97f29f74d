"""The keyring folder ($TGFLOW_HOME, default ~/.tgflow).

    keys/<name>.json          own keys: every version, private parts sealed
    trust/<name>.json         trusted public key files (own and imported)
    revocations/<keyid>.json  signed revocation statements
    audit.jsonl               hash-chained log of every key operation
    .lock                     taken while anything is changed

Private seeds never touch disk unsealed. Every change is atomic and logged.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

from . import _seal, clock, hashchain
from .atomic import write_bytes
from .canonical import b64e, encode, is_int, parse
from .inputfile import read_input
from .errors import (FormatError, InputError, KeyExistsError, KeyNotFoundError, KeyringError, NotFoundError,
                     PassphraseRequiredError, RotationError)
from .keys import (ALGS, KINDS, RECIPIENT, SIGNING, HybridSigningKey, PrivateKey, PublicKey, SoftwareComponent,
                   software_seeds)
from .lineage import (Lineage, PublicKeyFile, Revocation, parse_revocation, revocation_statement, rotation_statement,
                      vet)
from .signing import Signer, TrustPolicy

PRIVATE_FILE = "tgflow-private-key/1"
MAX_PASSPHRASE = 64 << 10
MAX_KEY_FILE = 1 << 20
MAX_AUDIT = 64 << 20
# The audit log's length and head, kept beside it: a log cut short (a crash,
# a careless edit, a restore of the log alone) no longer reads as intact.
AUDIT_HEAD = "audit.head"
AUDIT_HEAD_TYPE = "tgflow-audit-head/1"
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}\Z")
Passphrase = Callable[[], str]


def default_home(env: Mapping[str, str] = os.environ) -> Path:
    return Path(env.get("TGFLOW_HOME") or Path.home() / ".tgflow")


def passphrase_from_env(passphrase_file: str | None = None, env: Mapping[str, str] = os.environ) -> str | None:
    """An explicit --passphrase-file wins, then TGFLOW_PASSPHRASE, then
    TGFLOW_PASSPHRASE_FILE. Returns None when none is set (the CLI may then
    prompt on a terminal). One trailing newline is dropped from files."""
    path = passphrase_file
    if path is None and env.get("TGFLOW_PASSPHRASE"):
        return env["TGFLOW_PASSPHRASE"]
    path = path or env.get("TGFLOW_PASSPHRASE_FILE")
    if not path:
        return None
    data = read_input(path, "passphrase file", missing=PassphraseFileMissing, max_bytes=MAX_PASSPHRASE,
                      error=PassphraseRequiredError)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise PassphraseRequiredError(f"passphrase file {path} is not UTF-8 text",
                                      hint="a passphrase file holds one line of text") from None
    text = text[:-1] if text.endswith("\n") else text
    text = text[:-1] if text.endswith("\r") else text
    if not text:
        raise PassphraseRequiredError(f"passphrase file {path} is empty")
    if "\x00" in text or "\n" in text:
        raise PassphraseRequiredError(f"passphrase file {path} holds more than one line of text",
                                      hint="a passphrase file holds one line of text")
    return text


class PassphraseFileMissing(PassphraseRequiredError, NotFoundError):
    """A named passphrase file does not exist (a key problem: exit 3)."""


def _env_pin() -> str:
    from . import pkcs11

    return pkcs11.pin_from_env() or pkcs11.no_pin()


def is_path_ref(ref: str) -> bool:
    return "/" in ref or ref.endswith(".json")


def check_name(name: str) -> str:
    if not isinstance(name, str) or not _NAME.match(name):
        raise InputError(f"key name {name!r} is not allowed", hint="use 1-64 of A-Z a-z 0-9 . _ - (starting alphanumeric)")
    return name


@dataclass(frozen=True)
class KeyInfo:
    name: str
    kind: str
    keyid: str
    version: int
    created: str
    private: bool
    revoked: bool


class Keyring:
    def __init__(self, home: str | os.PathLike | None = None, *, now: clock.Clock = clock.utcnow,
                 pin: Passphrase | None = None) -> None:
        self.home = Path(home) if home else default_home()
        self.now = now
        self.pin = pin or _env_pin  # PKCS#11 PIN source: env, PIN file, or the caller's prompt
        self._records: list[Any] = []
        if self.home.exists() and not self.home.is_dir():
            raise KeyringError(f"the keyring {self.home} is not a folder",
                               hint="point TGFLOW_HOME (or --home) at a folder")

    # --- paths and locking ------------------------------------------------------
    def _dir(self, sub: str) -> Path:
        return self.home / sub

    def _ensure(self) -> None:
        for sub in ("", "keys", "trust", "revocations"):
            p = self.home / sub
            try:
                p.mkdir(mode=0o700, parents=True, exist_ok=True)
            except OSError as exc:
                raise KeyringError(f"cannot create the keyring folder {p}: {exc.strerror}",
                                   hint="point TGFLOW_HOME (or --home) at a writable folder") from None

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        self._ensure()
        with open(self.home / ".lock", "a+") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                # Check the audit chain before changing anything: a change that
                # could not be logged must not happen (and a retry must not repeat it).
                records, brk, _ = self.audit()
                if brk is not None:
                    raise KeyringError(f"audit log is broken at record {brk.index} ({brk.reason}); refusing to change keys",
                                       hint="run: tgflow key audit")
                self._records = records
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    # --- own keys ---------------------------------------------------------------
    def _key_path(self, name: str) -> Path:
        return self._dir("keys") / f"{check_name(name)}.json"

    def _load_key(self, name: str) -> dict[str, Any]:
        path = self._key_path(name)
        if not path.exists():
            raise KeyNotFoundError(f"no key named {name!r} in {self.home}", hint="see: tgflow key list")
        obj = parse(read_input(path, "key file", max_bytes=MAX_KEY_FILE, error=KeyringError), what=f"key file {path}")
        if not isinstance(obj, dict) or obj.get("type") != PRIVATE_FILE or obj.get("kind") not in KINDS:
            raise KeyringError(f"{path} is not a tgflow private key file")
        versions = obj.get("versions")
        if not isinstance(versions, list) or not versions or obj.get("name") != name:
            raise KeyringError(f"{path} is not a tgflow private key file")
        for n, v in enumerate(versions, 1):
            # Never trust a stored id: it is what revocations and trust are checked by.
            try:
                ok = isinstance(v, dict) and v.get("version") == n and is_int(v.get("version")) and \
                    PublicKey.from_dict({"kind": obj["kind"], "public": v.get("public")}).keyid == v.get("keyid")
            except FormatError:
                ok = False
            if not ok:
                raise KeyringError(f"key file {path} was altered: version {n}'s key id or number does not match its key",
                                   hint="restore the key file from backup")
        return obj

    def _he_name(self, name: str) -> bool:
        """An HE key (he_store.py) already has this name: one name, one key, across kinds."""
        return (self.home / "he" / "trusted" / f"{name}.json").exists()

    def _save_key(self, obj: dict[str, Any]) -> None:
        write_bytes(self._key_path(obj["name"]), (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode(), mode=0o600)

    def _public_file(self, obj: dict[str, Any]) -> PublicKeyFile:
        cur = obj["versions"][-1]
        key = PublicKey.from_dict({"kind": obj["kind"], "public": cur["public"]})
        lineage = Lineage.from_dict(obj["lineage"]) if obj["kind"] == SIGNING else None
        return PublicKeyFile(obj["name"], obj["kind"], cur["version"], cur["created"], key, lineage)

    @staticmethod
    def _aad(kind: str, public: dict[str, Any]) -> bytes:
        return encode({"kind": kind, "public": public})

    def _unseal(self, obj: dict[str, Any], version: dict[str, Any], passphrase: Passphrase):
        """The usable private key of one version: a ``PrivateKey``, or, when a
        half lives in a PKCS#11 token, a ``HybridSigningKey`` over both."""
        token = version.get("pkcs11") or {}
        try:
            secret = _seal.open_sealed(version["sealed"], passphrase(), self._aad(obj["kind"], version["public"]))
        except FormatError as exc:  # a damaged or hostile key file is a key problem (exit 3)
            raise KeyringError(f"key file for {obj['name']}: {exc}", hint="restore the key file from backup") from None
        if not token:
            key = PrivateKey.from_secret_bytes(obj["kind"], secret)
        else:
            key = self._split_key(obj, version, secret, token)
        if key.public.to_dict()["public"] != version["public"]:
            raise KeyringError(f"key file for {obj['name']} does not match its public key")
        return key

    def _split_key(self, obj: dict[str, Any], version: dict[str, Any], secret: bytes, token: Any):
        from . import pkcs11

        if obj["kind"] != SIGNING or not isinstance(token, dict) or set(token) != {"ed25519"}:
            raise KeyringError(f"key file for {obj['name']}: only the Ed25519 half of a signing key can be in a token")
        seeds = software_seeds(SIGNING, secret, set(ALGS[SIGNING]) - set(token))
        public = PublicKey.from_dict({"kind": SIGNING, "public": version["public"]}).public
        parts: dict[str, Any] = {alg: SoftwareComponent(alg, seed) for alg, seed in seeds.items()}
        parts["ed25519"] = pkcs11.TokenEd25519(pkcs11.parse_uri(token["ed25519"]), public["ed25519"], self.pin)
        return HybridSigningKey(parts)

    def _new_version(self, kind: str, number: int, passphrase: Passphrase, token: str | None = None,
                     adopt: bool = False) -> tuple[Any, dict[str, Any]]:
        """A new key version; with ``token`` (a PKCS#11 URI), its Ed25519 half
        is made in (or, with ``adopt``, taken from) the token."""
        key = PrivateKey.generate(kind)
        extra: dict[str, Any] = {}
        secret = key.secret_bytes()
        if token is not None:
            if kind != SIGNING:
                raise InputError("only signing keys can be held in a PKCS#11 token")
            key, extra, secret = self._token_half(key, token, adopt)
        public = key.public.to_dict()["public"]
        return key, {
            "version": number,
            "created": clock.fmt(self.now()),
            "keyid": key.public.keyid,
            "public": public,
            "sealed": _seal.seal(secret, passphrase(), self._aad(kind, public)),
            "custody": key.custody,
            **extra,
        }

    def _token_half(self, soft: PrivateKey, token: str, adopt: bool):
        from . import pkcs11

        uri = pkcs11.parse_uri(token)
        made = pkcs11.adopt(uri, self.pin) if adopt else pkcs11.generate(uri, soft.public.keyid[:16], self.pin)
        full, ed_public = made
        mldsa = soft.seeds["ml-dsa-65"]  # no token here offers ML-DSA: that half stays sealed in the keyring
        key = HybridSigningKey({"ed25519": pkcs11.TokenEd25519(full, ed_public, self.pin),
                                "ml-dsa-65": SoftwareComponent("ml-dsa-65", mldsa)})
        return key, {"pkcs11": {"ed25519": str(full)}}, encode({"ml-dsa-65": b64e(mldsa)})

    def generate(self, name: str, kind: str, passphrase: Passphrase, *, pkcs11: str | None = None,
                 adopt: bool = False) -> PublicKeyFile:
        """A new key; with ``pkcs11`` (an RFC 7512 URI) its Ed25519 half is made
        inside that token, or with ``adopt`` an existing token key is used."""
        if kind not in KINDS:
            raise InputError(f"key type must be one of: {', '.join(KINDS)}")
        with self._locked():
            if self._key_path(name).exists() or (self._dir("trust") / f"{name}.json").exists() or self._he_name(name):
                raise KeyExistsError(f"a key named {name!r} already exists", hint="pick another name, or rotate it")
            key, version = self._new_version(kind, 1, passphrase, pkcs11, adopt)
            obj = {"type": PRIVATE_FILE, "name": name, "kind": kind, "versions": [version]}
            if kind == SIGNING:
                obj["lineage"] = Lineage(key.public).to_dict()
            self._save_key(obj)
            pub = self._public_file(obj)
            self._write_trust(pub)
            self._audit("import-pkcs11" if adopt else "generate", name, pub.keyid,
                        {"kind": kind, "custody": version["custody"], **_token_detail(version)})
        return pub

    def rotate(self, name: str, passphrase: Passphrase, *, pkcs11: str | None = None,
               adopt: bool = False) -> PublicKeyFile:
        """A new version, signed over by the old and the new key wherever each
        lives (``pkcs11``: the new version's Ed25519 half is in that token)."""
        with self._locked():
            obj = self._load_key(name)
            old = self._unseal(obj, obj["versions"][-1], passphrase)
            number = obj["versions"][-1]["version"] + 1
            new, version = self._new_version(obj["kind"], number, passphrase, pkcs11, adopt)
            obj["versions"].append(version)
            if obj["kind"] == SIGNING:
                stmt = rotation_statement(name, old, new, number, self.now())
                lineage = Lineage.from_dict(obj["lineage"])
                obj["lineage"] = Lineage(lineage.root, lineage.chain + (stmt,)).to_dict()
            self._save_key(obj)
            pub = self._public_file(obj)
            self._write_trust(pub)
            self._audit("rotate", name, pub.keyid, {"version": number, "previous": old.public.keyid,
                                                    "custody": version["custody"], **_token_detail(version)})
        return pub

    def signer(self, name: str, passphrase: Passphrase) -> Signer:
        obj = self._load_key(name)
        if obj["kind"] != SIGNING:
            raise KeyringError(f"{name} is a recipient key; signing needs a signing key")
        cur = obj["versions"][-1]
        if cur["keyid"] in self._revoked_ids():
            raise KeyringError(f"key {name} (version {cur['version']}) is revoked", hint=f"rotate it: tgflow key rotate {name}")
        return Signer(name, cur["version"], self._unseal(obj, cur, passphrase), Lineage.from_dict(obj["lineage"]))

    def identities(self, name: str, passphrase: Passphrase) -> list[PrivateKey]:
        """Every version of a recipient key, newest first (old packages still open)."""
        obj = self._load_key(name)
        if obj["kind"] != RECIPIENT:
            raise KeyringError(f"{name} is a signing key; decryption needs a recipient key")
        return [self._unseal(obj, v, passphrase) for v in reversed(obj["versions"])]

    # --- trust store ------------------------------------------------------------
    def _write_trust(self, pub: PublicKeyFile) -> None:
        write_bytes(self._dir("trust") / f"{pub.name}.json", (json.dumps(pub.to_dict(), indent=2) + "\n").encode())

    def trusted(self) -> list[PublicKeyFile]:
        folder = self._dir("trust")
        if not folder.is_dir():
            return []
        return [load_public_file(p) for p in sorted(folder.glob("*.json"))]

    def public_file(self, name: str) -> PublicKeyFile:
        path = self._dir("trust") / f"{check_name(name)}.json"
        if not path.exists():
            raise KeyNotFoundError(f"no key named {name!r} in {self.home}", hint="see: tgflow key list")
        return load_public_file(path)

    def import_public(self, path: str | os.PathLike, name: str | None = None) -> PublicKeyFile:
        pub = load_public_file(path)
        name = check_name(name or pub.name)
        pub = PublicKeyFile(name, pub.kind, pub.version, pub.created, pub.key, pub.lineage)
        with self._locked():
            if self._he_name(name):
                raise KeyExistsError(f"{name!r} is an HE key here", hint="import it under another name with --name")
            if pub.lineage is not None:  # forks are checked against every name, and against revocations
                known = [t.lineage.walk() for t in self.trusted() if t.lineage is not None]
                vet(pub.lineage.walk(), known, self.revocations(), f"{path}")
            dest = self._dir("trust") / f"{name}.json"
            if dest.exists():
                cur = load_public_file(dest)
                if cur.kind != pub.kind or (cur.lineage and pub.lineage and
                                            cur.lineage.root.keyid != pub.lineage.root.keyid) or (
                        not cur.lineage and cur.keyid != pub.keyid):
                    raise KeyExistsError(f"a different key named {name!r} is already trusted",
                                         hint="import it under another name with --name")
                if cur.lineage and pub.lineage:
                    a, b = cur.lineage.walk(), pub.lineage.walk()
                    if any(x.key.keyid != y.key.keyid for x, y in zip(a, b)):
                        raise RotationError(f"{path} forks from the trusted rotation chain of {name!r}")
                    if len(b) <= len(a):
                        return cur  # already know this version or a newer one
            self._write_trust(pub)
            self._audit("import", name, pub.keyid, {"kind": pub.kind, "version": pub.version})
        return pub

    def resolve_public(self, ref: str) -> PublicKeyFile:
        """A path (it contains '/' or ends in '.json') is a public key file;
        anything else is a name in the trust store and never a file, so a
        file planted in the working folder cannot become trusted."""
        if is_path_ref(ref):
            return load_public_file(ref)
        return self.public_file(ref)

    # --- revocation ---------------------------------------------------------------
    def revoke(self, ref: str, reason: str, passphrase: Passphrase, *, when: datetime | None = None,
               branch: Lineage | None = None) -> Revocation:
        """Revoke an own key version, or with ``branch``, a key on a forked
        branch of an own key's root (``ref`` is then the own key's name)."""
        if not reason.strip():
            raise InputError("a revocation needs a --reason")
        with self._locked():
            obj, target = self._find_version(ref)
            if obj["kind"] != SIGNING:
                raise KeyringError("only signing keys can be revoked; rotate recipient keys instead")
            keyid = target["keyid"]
            if branch is not None:
                keyid = self._forked_key(obj, branch)
            signer = self._unseal(obj, obj["versions"][-1], passphrase)
            stmt = revocation_statement(keyid, reason, when or self.now(), signer,
                                        Lineage.from_dict(obj["lineage"]), branch)
            rev = parse_revocation(stmt)
            write_bytes(self._dir("revocations") / f"{rev.keyid}.json", (json.dumps(stmt, indent=2) + "\n").encode())
            self._audit("revoke", obj["name"], rev.keyid, {"reason": reason, "revoked_at": clock.fmt(rev.revoked_at),
                                                           **({"branch": True} if branch else {})})
        return rev

    @staticmethod
    def _forked_key(obj: dict[str, Any], branch: Lineage) -> str:
        """The first key where ``branch`` leaves our own chain (the fork's head)."""
        ours, theirs = Lineage.from_dict(obj["lineage"]).walk(), branch.walk()
        if theirs[0].key.keyid != ours[0].key.keyid:
            raise InputError(f"that chain does not start at {obj['name']}'s root key; it is not a fork of it")
        for mine, other in zip(ours + [None] * len(theirs), theirs):
            if mine is None or mine.key.keyid != other.key.keyid:
                return other.key.keyid
        raise InputError("that chain does not fork from yours: every version in it is your own")

    def _find_version(self, ref: str) -> tuple[dict[str, Any], dict[str, Any]]:
        if _NAME.match(ref) and self._key_path(ref).exists():
            obj = self._load_key(ref)
            return obj, obj["versions"][-1]
        ref_l = ref.lower()
        if len(ref_l) >= 8 and re.fullmatch(r"[0-9a-f]+", ref_l):
            hits = [(o, v) for o in self._own_keys() for v in o["versions"] if v["keyid"].startswith(ref_l)]
            if len(hits) == 1:
                return hits[0]
            if len(hits) > 1:
                raise InputError(f"key id prefix {ref} is ambiguous; give more digits")
        raise KeyNotFoundError(f"no own key or key id matching {ref!r}", hint="see: tgflow key list")

    def revocations(self) -> list[Revocation]:
        folder = self._dir("revocations")
        if not folder.is_dir():
            return []
        return [load_revocation(p) for p in sorted(folder.glob("*.json"))]

    def _revoked_ids(self) -> set[str]:
        return {r.keyid for r in self.revocations()}

    def revocation_path(self, keyid: str) -> Path:
        return self._dir("revocations") / f"{keyid}.json"

    # --- listing ----------------------------------------------------------------
    def _own_keys(self) -> list[dict[str, Any]]:
        folder = self._dir("keys")
        return [self._load_key(p.stem) for p in sorted(folder.glob("*.json"))] if folder.is_dir() else []

    def list(self) -> list[KeyInfo]:
        revoked = self._revoked_ids()
        own = {o["name"] for o in self._own_keys()}
        return [KeyInfo(p.name, p.kind, p.keyid, p.version, p.created, p.name in own, p.keyid in revoked)
                for p in self.trusted()]

    def show(self, name: str) -> dict[str, Any]:
        pub = self.public_file(name)
        revoked = self._revoked_ids()
        out = pub.to_dict()
        out.pop("lineage", None)
        out["private_in_keyring"] = self._key_path(name).exists()
        out["revoked"] = pub.keyid in revoked
        own = {v["keyid"]: v for v in self._load_key(name)["versions"]} if out["private_in_keyring"] else {}
        if pub.lineage:
            out["versions"] = [{"version": v.version, "keyid": v.key.keyid, "rotated_at": v.time or None,
                                "revoked": v.key.keyid in revoked,
                                **_custody_of(own.get(v.key.keyid))} for v in pub.lineage.walk()]
        return out

    # --- policy and audit ---------------------------------------------------------
    def trust_policy(self, trusted: list[str] | None = None, revocation_files: list[str] | None = None,
                     **kw: Any) -> TrustPolicy:
        keys = [self.resolve_public(t) for t in trusted] if trusted else self.trusted()
        revs = self.revocations() + [load_revocation(p) for p in revocation_files or []]
        return TrustPolicy(trusted=keys, revocations=revs, **kw)

    def _audit(self, op: str, name: str, keyid: str, detail: dict[str, Any]) -> None:
        """Append one record (under the lock; ``_locked`` checked the chain),
        then move the head file that makes a cut-off tail detectable."""
        records = self._records
        head, _, _ = hashchain.check(records)
        record = hashchain.link({"op": op, "time": clock.fmt(self.now()), "name": name, "keyid": keyid,
                                 "detail": detail}, len(records), head)
        with open(self.home / "audit.jsonl", "ab") as f:
            f.write(encode(record) + b"\n")
            f.flush()
            os.fsync(f.fileno())
        records.append(record)
        write_bytes(self.home / AUDIT_HEAD, encode({"type": AUDIT_HEAD_TYPE, "count": len(records),
                                                    "head": hashchain.record_hash(record)}) + b"\n", mode=0o600)

    def audit_records(self) -> list[Any]:
        path = self.home / "audit.jsonl"
        if not path.exists():
            return []
        out = []
        data = read_input(path, "audit log", max_bytes=MAX_AUDIT, error=KeyringError)
        for n, line in enumerate(data.splitlines()):
            try:
                out.append(parse(line, what="audit record"))
            except FormatError:
                out.append({"unparseable": n})
        return out

    def _recorded_head(self) -> tuple[int, str] | None:
        path = self.home / AUDIT_HEAD
        if not path.exists():
            return None
        try:
            obj = parse(read_input(path, "audit head", max_bytes=4096, error=KeyringError), what="audit head")
        except FormatError:
            obj = None
        if not isinstance(obj, dict) or obj.get("type") != AUDIT_HEAD_TYPE or not is_int(obj.get("count")) \
                or not isinstance(obj.get("head"), str):
            return (-1, "")
        return obj["count"], obj["head"]

    def audit(self) -> tuple[list[Any], hashchain.ChainBreak | None, str]:
        """The log, its first break (a cut-off tail counts), and its head."""
        records = self.audit_records()
        head, count, brk = hashchain.check(records)
        recorded = self._recorded_head()
        if brk is None and recorded is not None:
            want, want_head = recorded
            if want < 0:
                brk = hashchain.ChainBreak(count, f"{AUDIT_HEAD} is unreadable")
            elif count < want:
                brk = hashchain.ChainBreak(count, f"log was truncated: {AUDIT_HEAD} records {want} records, "
                                                  f"the log holds {count}")
            elif want and hashchain.record_hash(records[want - 1]) != want_head:
                brk = hashchain.ChainBreak(want - 1, f"record {want - 1} is not the one {AUDIT_HEAD} records")
        return records, brk, head


def _custody_of(version: dict[str, Any] | None) -> dict[str, Any]:
    if version is None:
        return {}
    return {"custody": version.get("custody") or {"ed25519": "software", "ml-dsa-65": "software"},
            **_token_detail(version)}


def _token_detail(version: dict[str, Any]) -> dict[str, Any]:
    return {"pkcs11": version["pkcs11"]} if version.get("pkcs11") else {}


def load_public_file(path: str | os.PathLike) -> PublicKeyFile:
    p = Path(path)
    data = read_input(p, "public key file", max_bytes=MAX_KEY_FILE)
    try:
        return PublicKeyFile.from_dict(parse(data, what=str(p)))
    except FormatError as exc:
        raise InputError(f"{p}: {exc}") from None


def load_revocation(path: str | os.PathLike) -> Revocation:
    p = Path(path)
    data = read_input(p, "revocation file")
    try:
        return parse_revocation(parse(data, what=str(p)))
    except FormatError as exc:
        raise InputError(f"{p}: {exc}") from None
