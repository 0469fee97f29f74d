"""The keyring folder ($TGFLOW_HOME, default ~/.tgflow).

    keys/<name>.json          own keys: every version, private parts sealed (here)
    trust/<name>.json         trusted public key files, own and imported (keyring_trust.py)
    revocations/<keyid>.json  signed revocation statements (keyring_revoke.py)
    audit.jsonl               hash-chained log of every key operation (keyring_audit.py)
    .lock                     taken while anything is changed

Private seeds never touch disk unsealed. Every change is atomic and logged.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Mapping

from . import _seal, clock
from .atomic import write_bytes
from .canonical import b64e, encode, is_int, parse
from .errors import (FormatError, InputError, KeyExistsError, KeyNotFoundError, KeyringError, NotFoundError,
                     PassphraseRequiredError)
from .inputfile import read_input
from .keyring_audit import AuditLog
from .keyring_revoke import Passphrase, Revocations
from .keyring_trust import MAX_KEY_FILE, NAME, TrustStore, check_name, is_path_ref
from .keys import (ALGS, KINDS, RECIPIENT, SIGNING, HybridSigningKey, PrivateKey, PublicKey, SoftwareComponent,
                   software_seeds)
from .lineage import Lineage, PublicKeyFile, rotation_statement
from .signing import Signer

PRIVATE_FILE = "tgflow-private-key/1"
MAX_PASSPHRASE = 64 << 10


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


@dataclass(frozen=True)
class KeyInfo:
    name: str
    kind: str
    keyid: str
    version: int
    created: str
    private: bool
    revoked: bool


def read_key_file(path: Path, *, identity: bool = False) -> bytes:
    """A key file's bytes, read from the open file after checking it is a regular file (a FIFO or a
    device here would hang or never end). An ``identity`` file (--identity FILE, from outside the
    keyring) is also refused as a link, or when it is not the user's or others may read or change it."""
    what = "identity file" if identity else "key file"
    flags = os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0) | (os.O_NOFOLLOW if identity else 0)
    try:
        fd = os.open(path, flags)
    except FileNotFoundError:
        raise KeyNotFoundError(f"{what} {path} does not exist", hint="check the path") from None
    except OSError as exc:
        raise KeyringError(f"cannot open {what} {path}: {exc.strerror}"
                           + (" (a link is refused)" if identity else "")) from None
    with os.fdopen(fd, "rb") as f:
        st = os.fstat(f.fileno())
        if not stat.S_ISREG(st.st_mode):
            raise KeyringError(f"{what} {path} is not a regular file")
        if identity and (st.st_uid != os.getuid() or st.st_mode & 0o077):
            raise KeyringError(f"identity file {path} is not yours or other users can read or change it (mode "
                               f"{stat.S_IMODE(st.st_mode):04o})",
                               hint=f"chmod 600 {path} (the keyring keeps its own key files so)")
        data = f.read(MAX_KEY_FILE + 1)
    if len(data) > MAX_KEY_FILE:
        raise KeyringError(f"{what} {path} is larger than {MAX_KEY_FILE} bytes")
    return data


class Keyring(TrustStore, Revocations, AuditLog):
    """Own keys (here), trusted keys and the trust policy (TrustStore), revocations
    (Revocations) and the audit log (AuditLog), over one folder and one lock."""

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
            raise self.not_found(name)
        return self._checked_key(path, name)

    def _checked_key(self, path: Path, name: str | None, data: bytes | None = None) -> dict[str, Any]:
        """A private key file's document, every field the keyring reads checked (a damaged or
        hostile file is a key problem, exit 3: never a KeyError)."""
        try:
            obj = parse(read_key_file(path) if data is None else data, what=f"key file {path}")
        except FormatError as exc:
            raise KeyringError(str(exc), hint="restore the key file from backup") from None
        if not isinstance(obj, dict) or obj.get("type") != PRIVATE_FILE or obj.get("kind") not in KINDS:
            raise KeyringError(f"{path} is not a tgflow private key file")
        versions = obj.get("versions")
        if not isinstance(versions, list) or not versions or not isinstance(obj.get("name"), str) or \
                not NAME.match(obj["name"]) or (name is not None and obj.get("name") != name):
            raise KeyringError(f"{path} is not a tgflow private key file")
        for n, v in enumerate(versions, 1):
            # Never trust a stored id: it is what revocations and trust are checked by.
            try:
                ok = isinstance(v, dict) and v.get("version") == n and is_int(v.get("version")) and \
                    isinstance(v.get("sealed"), dict) and isinstance(v.get("created"), str) and \
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
        """Every version of a recipient key, newest first (old packages still open). ``name`` may
        be a key file's path (it has a '/' or ends in .json): an identity carried to this machine."""
        obj = self._identity_file(Path(name)) if is_path_ref(name) else self._load_key(name)
        if obj["kind"] != RECIPIENT:
            raise KeyringError(f"{name} is a signing key; decryption needs a recipient key")
        return [self._unseal(obj, v, passphrase) for v in reversed(obj["versions"])]

    def _identity_file(self, path: Path) -> dict[str, Any]:
        """A private key file outside the keyring, held to what the keyring's own files are: a
        regular file of this user's that no one else can read or write (checked on the open file)."""
        return self._checked_key(path, None, read_key_file(path, identity=True))

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

def _custody_of(version: dict[str, Any] | None) -> dict[str, Any]:
    if version is None:
        return {}
    return {"custody": version.get("custody") or {"ed25519": "software", "ml-dsa-65": "software"},
            **_token_detail(version)}


def _token_detail(version: dict[str, Any]) -> dict[str, Any]:
    return {"pkcs11": version["pkcs11"]} if version.get("pkcs11") else {}


