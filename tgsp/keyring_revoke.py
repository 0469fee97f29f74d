"""Revocation, the keyring's use of key lineage: signed statements that a key version (or a
forked branch of an own key's root) is revoked, and the lookups they need.

    revocations/<keyid>.json   one signed revocation statement per revoked key id
"""

from __future__ import annotations

import json
import re
from datetime import datetime
from pathlib import Path
from typing import Any, Callable

from . import clock
from .atomic import write_bytes
from .errors import InputError, KeyNotFoundError, KeyringError
from .keyring_trust import NAME, load_revocation
from .keys import SIGNING
from .lineage import Lineage, Revocation, parse_revocation, revocation_statement

Passphrase = Callable[[], str]


class Revocations:
    """Revoking own keys, and the revocations the keyring holds. Mixed into Keyring, whose
    ``_dir``, ``_locked``, ``_load_key``, ``_key_path``, ``_own_keys``, ``_unseal``, ``_audit`` and
    ``now`` it uses."""

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
        if NAME.match(ref) and self._key_path(ref).exists():
            obj = self._load_key(ref)
            return obj, obj["versions"][-1]
        ref_l = ref.lower()
        if len(ref_l) >= 8 and re.fullmatch(r"[0-9a-f]+", ref_l):
            hits = [(o, v) for o in self._own_keys() for v in o["versions"] if v["keyid"].startswith(ref_l)]
            if len(hits) == 1:
                return hits[0]
            if len(hits) > 1:
                raise InputError(f"key id prefix {ref} is ambiguous; give more digits")
        raise KeyNotFoundError(f"no own key or key id matching {ref!r}",
                               hint="see: tgflow key list; a key on a forked branch of your own key (made with a "
                                    "stolen older version) is revoked with: tgflow key revoke NAME --fork FILE, "
                                    "FILE being its package or public key file")

    def revocations(self) -> list[Revocation]:
        folder = self._dir("revocations")
        if not folder.is_dir():
            return []
        return [load_revocation(p) for p in sorted(folder.glob("*.json"))]

    def _revoked_ids(self) -> set[str]:
        return {r.keyid for r in self.revocations()}

    def revocation_path(self, keyid: str) -> Path:
        return self._dir("revocations") / f"{keyid}.json"
