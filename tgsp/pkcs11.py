"""Ed25519 signing keys held in a PKCS#11 token (python-pkcs11).

A token key is named by an RFC 7512 URI (``pkcs11:token=ci;object=release;id=%01``).
The module comes only from ``TGFLOW_PKCS11_MODULE`` and the PIN only from
``TGFLOW_PKCS11_PIN``, ``TGFLOW_PKCS11_PIN_FILE`` or the caller's prompt:
never from a URI, argv or a key file, so an edited key file cannot make
tgflow load a library or leak a PIN. Keys are found by ``CKA_ID``; a label
that names more than one key is refused. The private key never leaves the
token: it is generated there sensitive and non-extractable, and only
``C_Sign`` with ``CKM_EDDSA`` is asked of it.
"""

from __future__ import annotations

import os
import re
import threading
from dataclasses import dataclass
from typing import Any, Callable
from urllib.parse import quote, unquote_to_bytes

from .errors import InputError, KeyringError
from .inputfile import read_input

MODULE_ENV, PIN_ENV, PIN_FILE_ENV = "TGFLOW_PKCS11_MODULE", "TGFLOW_PKCS11_PIN", "TGFLOW_PKCS11_PIN_FILE"
CUSTODY = "pkcs11"
ED25519_OID = bytes.fromhex("06032b6570")  # id-Ed25519 (RFC 8410), DER
_PATH_ATTRS = {"token", "manufacturer", "serial", "model", "object", "id", "type", "slot-id"}
_REFUSED_QUERY = {"pin-value", "pin-source", "module-name", "module-path"}
_UNRESERVED = re.compile(r"[A-Za-z0-9\-._~:\[\]@!$'()*+,=&]*\Z")
Pin = Callable[[], str]


class TokenError(KeyringError):
    """A PKCS#11 module, token, PIN or key problem (exit 3)."""


@dataclass(frozen=True)
class Uri:
    """The parsed path attributes of an RFC 7512 URI (query attributes refused)."""

    token: str | None = None
    serial: str | None = None
    object: str | None = None
    id: bytes | None = None

    def __str__(self) -> str:
        parts = [f"{k}={quote(v, safe='')}" for k, v in (("token", self.token), ("serial", self.serial),
                                                          ("object", self.object)) if v is not None]
        if self.id is not None:
            parts.append("id=" + "".join(f"%{b:02x}" for b in self.id))
        return "pkcs11:" + ";".join(parts)


def parse_uri(text: str) -> Uri:
    """Parse ``pkcs11:...``; InputError naming the problem otherwise."""
    if not isinstance(text, str) or not text.startswith("pkcs11:"):
        raise InputError(f"{text!r} is not a PKCS#11 URI", hint="use pkcs11:token=LABEL;object=NAME;id=%01 (RFC 7512)")
    path, _, query = text[len("pkcs11:"):].partition("?")
    for item in filter(None, query.split("&")):
        name = item.partition("=")[0]
        if name in _REFUSED_QUERY:
            raise InputError(f"PKCS#11 URI attribute {name} is not accepted",
                             hint=f"set {MODULE_ENV} for the module and {PIN_ENV} or {PIN_FILE_ENV} for the PIN")
        raise InputError(f"unknown PKCS#11 URI query attribute {name!r}")
    found: dict[str, Any] = {}
    for item in filter(None, path.split(";")):
        name, sep, raw = item.partition("=")
        if not sep or name not in _PATH_ATTRS:
            raise InputError(f"unknown PKCS#11 URI attribute {name!r}", hint="use token, serial, object and id")
        if name in found:
            raise InputError(f"PKCS#11 URI attribute {name} is given twice")
        if not _UNRESERVED.match(raw.replace("%", "")) or re.search(r"%(?![0-9A-Fa-f]{2})", raw):
            raise InputError(f"PKCS#11 URI attribute {name} is not percent-encoded correctly")
        value = unquote_to_bytes(raw)
        if name == "id":
            found["id"] = value
        elif name in ("token", "serial", "object"):
            try:
                found[name] = value.decode("utf-8")
            except UnicodeDecodeError:
                raise InputError(f"PKCS#11 URI attribute {name} is not UTF-8") from None
        elif name == "type" and value != b"private":
            raise InputError("a signing key URI names the private key (type=private, or no type)")
    uri = Uri(**found)
    if uri.token is None and uri.serial is None:
        raise InputError("the PKCS#11 URI names no token", hint="add token=LABEL (or serial=...)")
    return uri


def pin_from_env(env=os.environ) -> str | None:
    if env.get(PIN_ENV):
        return env[PIN_ENV]
    path = env.get(PIN_FILE_ENV)
    if not path:
        return None
    text = read_input(path, "PIN file", max_bytes=4096, error=TokenError).decode("utf-8", "replace")
    return text.rstrip("\r\n")


_LIBS: dict[str, Any] = {}
_LOCK = threading.Lock()


def _lib(env=os.environ):
    path = env.get(MODULE_ENV)
    if not path:
        raise TokenError(f"this key is in a PKCS#11 token, and {MODULE_ENV} is not set",
                         hint=f"export {MODULE_ENV}=/usr/lib/softhsm/libsofthsm2.so (or your HSM's module)")
    try:
        import pkcs11
    except ImportError:
        raise TokenError("PKCS#11 keys need python-pkcs11", hint="pip install 'tgflow[pkcs11]'") from None
    with _LOCK:
        if path not in _LIBS:
            if not os.path.isfile(path):
                raise TokenError(f"PKCS#11 module {path} does not exist", hint=f"check {MODULE_ENV}")
            try:
                _LIBS[path] = pkcs11.lib(path)
            except Exception as exc:  # the loader's own error: name the module, not a traceback
                raise TokenError(f"cannot load PKCS#11 module {path}: {str(exc).splitlines()[0][:120]}") from None
        return _LIBS[path]


def _errors():
    import pkcs11.exceptions as X

    return X


class Session:
    """One logged-in session on the token a URI names; closed with ``close``."""

    def __init__(self, uri: Uri, pin: Pin, *, rw: bool = False) -> None:
        X = _errors()
        lib = _lib()
        try:
            token = lib.get_token(**{k: v for k, v in (("token_label", uri.token), ("token_serial",
                                   uri.serial.encode() if uri.serial else None)) if v is not None})
        except X.NoSuchToken:
            raise TokenError(f"no PKCS#11 token {uri.token or uri.serial!r} in {os.environ.get(MODULE_ENV)}",
                             hint="is the token present? list tokens with: pkcs11-tool --list-slots") from None
        except X.MultipleTokensReturned:
            raise TokenError(f"more than one PKCS#11 token matches {uri}", hint="add serial=... to the URI") from None
        except X.PKCS11Error as exc:
            raise TokenError(f"PKCS#11 token {uri.token!r}: {type(exc).__name__}") from None
        self.label = token.label
        try:
            self._s = _open(token, rw, pin)
        except (X.PinIncorrect, X.PinInvalid, X.PinLenRange):
            raise TokenError(f"wrong PIN for PKCS#11 token {self.label!r}", hint=f"check {PIN_ENV} / {PIN_FILE_ENV}") from None
        except X.PinLocked:
            raise TokenError(f"the PIN of PKCS#11 token {self.label!r} is locked", hint="ask the token's SO to unlock it") from None
        except (X.TokenNotPresent, X.TokenNotRecognised, X.DeviceRemoved):
            raise TokenError(f"PKCS#11 token {self.label!r} is not present") from None
        except X.PKCS11Error as exc:
            raise TokenError(f"cannot open PKCS#11 token {self.label!r}: {type(exc).__name__}") from None

    def close(self) -> None:
        s, self._s = self._s, None
        if s is not None:
            try:
                s.close()
            except Exception:  # closing a session of a removed token must not mask the real error
                pass

    def __enter__(self) -> Session:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # --- keys ---------------------------------------------------------------
    def _find(self, uri: Uri, object_class) -> list:
        from pkcs11 import Attribute, KeyType

        query = {Attribute.CLASS: object_class, Attribute.KEY_TYPE: KeyType.EC_EDWARDS}
        if uri.id is not None:
            query[Attribute.ID] = uri.id
        if uri.object is not None:
            query[Attribute.LABEL] = uri.object
        return list(self._s.get_objects(query))

    def private_key(self, uri: Uri):
        from pkcs11 import ObjectClass

        if uri.id is None and uri.object is None:
            raise InputError("the PKCS#11 URI names no key", hint="add id=%.. (preferred) or object=LABEL")
        hits = self._find(uri, ObjectClass.PRIVATE_KEY)
        if not hits:
            raise TokenError(f"no Ed25519 private key matching {uri} in token {self.label!r}")
        if len(hits) > 1:
            raise TokenError(f"{len(hits)} Ed25519 keys in token {self.label!r} match {uri}; refusing to guess",
                             hint="name the key by its CKA_ID: id=%..")
        return hits[0]

    def public_raw(self, uri: Uri, key_id: bytes) -> bytes:
        """The 32-byte Ed25519 public key of the pair with this CKA_ID."""
        from pkcs11 import Attribute, ObjectClass

        hits = self._find(Uri(token=uri.token, serial=uri.serial, id=key_id), ObjectClass.PUBLIC_KEY)
        if len(hits) != 1:
            raise TokenError(f"expected one Ed25519 public key with id {key_id.hex()} in token {self.label!r}, "
                             f"found {len(hits)}")
        return _point(hits[0][Attribute.EC_POINT])

    def generate(self, uri: Uri, label: str) -> tuple[Uri, bytes]:
        """A new Ed25519 pair inside the token (sensitive, never extractable)."""
        from pkcs11 import Attribute, KeyType, Mechanism, ObjectClass

        key_id = uri.id if uri.id is not None else os.urandom(16)
        if self._find(Uri(token=uri.token, id=key_id), ObjectClass.PRIVATE_KEY):
            raise TokenError(f"token {self.label!r} already holds a key with id {key_id.hex()}",
                             hint="pick another id, or adopt it: tgflow key import-pkcs11")
        label = uri.object or label
        common = {Attribute.TOKEN: True, Attribute.ID: key_id, Attribute.LABEL: label}
        X = _errors()
        try:
            pub, _priv = self._s.generate_keypair(
                KeyType.EC_EDWARDS, mechanism=Mechanism.EC_EDWARDS_KEY_PAIR_GEN, store=True,
                public_template={**common, Attribute.EC_PARAMS: ED25519_OID, Attribute.VERIFY: True},
                private_template={**common, Attribute.SIGN: True, Attribute.SENSITIVE: True,
                                  Attribute.EXTRACTABLE: False, Attribute.PRIVATE: True})
        except (X.MechanismInvalid, X.FunctionNotSupported, X.AttributeValueInvalid):
            raise TokenError(f"token {self.label!r} cannot make Ed25519 keys (CKM_EC_EDWARDS_KEY_PAIR_GEN)") from None
        except X.PKCS11Error as exc:
            raise TokenError(f"token {self.label!r} refused to make the key: {type(exc).__name__}") from None
        return Uri(token=uri.token, serial=uri.serial, object=label, id=key_id), _point(pub[Attribute.EC_POINT])

    def sign(self, uri: Uri, message: bytes) -> bytes:
        from pkcs11 import Mechanism

        X = _errors()
        try:
            return self.private_key(uri).sign(message, mechanism=Mechanism.EDDSA)
        except X.PKCS11Error as exc:
            raise TokenError(f"token {self.label!r} failed to sign: {type(exc).__name__}") from None


def _open(token, rw: bool, pin: Pin):
    """A user session, logged in with the PIN. Login is per process and token,
    so a session some other code of this process left logged in would let a
    wrong PIN through: that is refused, and tgflow closes its own sessions
    (which logs out) after each use."""
    X = _errors()
    try:
        return token.open(rw=rw, user_pin=pin())
    except X.UserAlreadyLoggedIn:
        raise TokenError(f"another session of this process is logged in to PKCS#11 token {token.label!r}",
                         hint="close it first; tgflow logs in for each use") from None


def _point(value: bytes) -> bytes:
    """CKA_EC_POINT of an Ed25519 key: a DER OCTET STRING of 32 bytes (or, by some tokens, the raw 32)."""
    if len(value) == 34 and value[:2] == b"\x04\x20":
        return value[2:]
    if len(value) == 32:
        return value
    raise TokenError("the token's Ed25519 public key has an unexpected encoding")


class TokenEd25519:
    """The Ed25519 half of a hybrid key, signing inside a token."""

    alg = "ed25519"
    custody = CUSTODY

    def __init__(self, uri: Uri, public_raw: bytes, pin: Pin) -> None:
        self.uri, self.public_raw, self._pin = uri, public_raw, pin

    def sign(self, message: bytes) -> bytes:
        """One session per signature: log in, check it is still our key, sign, log out."""
        with Session(self.uri, self._pin) as s:
            if s.public_raw(self.uri, s.private_key(self.uri)[_attr_id()]) != self.public_raw:
                raise TokenError(f"the key at {self.uri} is not the one this keyring recorded",
                                 hint="was the token re-initialised? re-adopt it with key import-pkcs11")
            return s.sign(self.uri, message)


def _attr_id():
    from pkcs11 import Attribute

    return Attribute.ID


def adopt(uri: Uri, pin: Pin) -> tuple[Uri, bytes]:
    """An existing token key: its full URI (with its CKA_ID) and public key."""
    with Session(uri, pin) as s:
        key = s.private_key(uri)
        key_id = key[_attr_id()]
        return Uri(token=uri.token, serial=uri.serial, object=uri.object, id=key_id), s.public_raw(uri, key_id)


def generate(uri: Uri, label: str, pin: Pin) -> tuple[Uri, bytes]:
    with Session(uri, pin, rw=True) as s:
        return s.generate(uri, label)


def no_pin() -> str:
    raise TokenError("this key is in a PKCS#11 token and no PIN was given",
                     hint=f"set {PIN_ENV} or {PIN_FILE_ENV} (or run at a terminal to be asked)")


__all__ = ["CUSTODY", "MODULE_ENV", "PIN_ENV", "PIN_FILE_ENV", "Session", "TokenEd25519", "TokenError", "Uri",
           "adopt", "generate", "no_pin", "parse_uri", "pin_from_env"]
