"""The keyring's trust store: trusted public key files (own and imported), how a reference
names one, and the trust policy built from them and the revocations.

    trust/<name>.json   one trusted public key file per name
"""

from __future__ import annotations

import difflib
import json
import os
import re
from pathlib import Path
from typing import Any

from .atomic import write_bytes
from .canonical import parse
from .errors import FormatError, InputError, KeyExistsError, KeyNotFoundError, RotationError
from .inputfile import read_input
from .lineage import PublicKeyFile, Revocation, parse_revocation, vet
from .signing import TrustPolicy

MAX_KEY_FILE = 1 << 20
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}\Z")  # a key's name, in every folder of the keyring


def check_name(name: str) -> str:
    if not isinstance(name, str) or not NAME.match(name):
        raise InputError(f"key name {name!r} is not allowed", hint="use 1-64 of A-Z a-z 0-9 . _ - (starting alphanumeric)")
    return name


def is_path_ref(ref: str) -> bool:
    return "/" in ref or ref.endswith(".json")


class TrustStore:
    """Trusted public keys and the trust policy. Mixed into Keyring, whose ``_dir``, ``_locked``,
    ``_audit`` and ``revocations`` (Revocations) it uses."""

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
            raise self.not_found(name)
        return load_public_file(path)

    def not_found(self, name: str) -> KeyNotFoundError:
        """"no key named ...", with the closest names this keyring has ("did you mean release?")."""
        have = sorted({p.stem for sub in ("trust", "keys") if (self.home / sub).is_dir()
                       for p in (self.home / sub).glob("*.json")})
        near = difflib.get_close_matches(name, have, n=1, cutoff=0.6)
        return KeyNotFoundError(f"no key named {name!r} in {self.home}" + (f"; did you mean {near[0]!r}?" if near else ""),
                                hint="see: tgflow key list")

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

    def trust_policy(self, trusted: list[str] | None = None, revocation_files: list[str] | None = None,
                     **kw: Any) -> TrustPolicy:
        keys = [self.resolve_public(t) for t in trusted] if trusted else self.trusted()
        revs = self.revocations() + [load_revocation(p) for p in revocation_files or []]
        return TrustPolicy(trusted=keys, revocations=revs, **kw)


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
