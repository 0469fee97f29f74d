"""The keys that guard a route's state at rest (docs/routes.md, "State at rest"; ADR 0019).

Everything in a state folder that holds private data or weights is a sealed
file (tgsp/sealed.py) encrypted to the route's recipient keys, the same keys
its packages are encrypted to. Writing needs only their public halves;
reading needs one private half, loaded (and its passphrase asked) only when a
sealed file is read. The checkpoint pointer is signed by the round's signing
key, so a planted or swapped checkpoint is refused, not resumed.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from tgsp import sealed
from tgsp.errors import (DecryptionError, FormatError, InputError, KeyringError, PassphraseRequiredError,
                         WrongPassphraseError)


def identities_for(keyring, names: Sequence[str], passphrase) -> list:
    """The private recipient keys among ``names`` that this keyring holds. A key it does not
    hold is skipped; a wrong or missing passphrase is the user's to fix, so it is raised."""
    out = []
    for name in names:
        try:
            out += keyring.identities(name, passphrase)
        except (WrongPassphraseError, PassphraseRequiredError):
            raise
        except KeyringError:
            continue
    return out


@dataclass
class StateKeys:
    route: str
    recipients: tuple[Any, ...]  # PublicKey of each recipient: what sealing needs
    names: tuple[str, ...]  # how the spec names them, for messages
    load_identities: Callable[[], list]  # the private halves, on first read
    signing_key: Any  # signs checkpoint pointers: sign_hybrid() and public (a SigningKey, or a PrivateKey)
    _identities: list | None = field(default=None, repr=False)

    def seal(self, data: bytes, ad: dict[str, Any]) -> bytes:
        return sealed.seal(data, self.recipients, {"route": self.route, **ad})

    def open(self, blob: bytes, ad: dict[str, Any], what: str, path: Path) -> bytes:
        """The plaintext of the sealed file at ``path`` (``what`` names it in errors)."""
        if not sealed.is_sealed(blob):
            raise InputError(f"{what} {path} is not a sealed state file", hint="restore it from a backup, or "
                             "delete it (tgflow writes state only sealed)")
        if self._identities is None:
            self._identities = self.load_identities()
        if not self._identities:
            raise InputError(f"{what} {path} is encrypted to route {self.route}'s recipient keys, and this keyring "
                             f"holds none of their private keys ({', '.join(self.names)})",
                             hint=f"run where the private key {self.names[0]!r} is, or import it (tgflow key "
                                  "import), or name a key file in output.recipients")
        try:
            return sealed.open_sealed(blob, self._identities, {"route": self.route, **ad})
        except FormatError as exc:
            raise InputError(f"{what} {path} cannot be used: {exc}",
                             hint="it was copied from another route or round, or damaged; restore the state "
                                  "folder from a backup") from None
        except DecryptionError:  # opaque on purpose: which key, chunk or tag failed is not said
            raise InputError(f"{what} {path} does not decrypt with route {self.route}'s recipient keys "
                             f"({', '.join(self.names)})", hint="it is damaged or was sealed to other keys; "
                             "restore the state folder from a backup") from None

    def sign(self, payload_type: str, payload: bytes) -> list[tuple[str, bytes]]:
        return self.signing_key.sign_hybrid(payload_type, payload)

    def verify(self, payload_type: str, payload: bytes, sigs: dict[str, bytes]) -> None:
        """SignatureError unless every component of the signing key signed ``payload``."""
        self.signing_key.public.verify_hybrid(payload_type, payload, sigs)


def for_round(route: str, recipients: Sequence[str], keyring, passphrase, signer) -> StateKeys:
    """The state keys of a round: the spec's output recipients and signing key."""
    public = tuple(keyring.resolve_public(r).key for r in recipients)
    return StateKeys(route, public, tuple(recipients), lambda: identities_for(keyring, recipients, passphrase),
                     signer.key)


def ephemeral(route: str) -> StateKeys:
    """Keys that live only in this process: for training outside a route (benchmarks, the
    library's ``train`` called directly). Whatever they seal is unreadable after exit."""
    return from_secret(route, os.urandom(32))


def from_secret(route: str, secret: bytes) -> StateKeys:
    """Keys derived from a 32-byte secret: ``train`` called directly by processes that share the
    secret (torchrun ranks, a run resumed in a new process) and no keyring."""
    from tgsp.keys import RECIPIENT, SIGNING, PrivateKey

    if len(secret) != 32:
        raise ValueError("the state secret is 32 bytes")
    seed = lambda label, n: hashlib.shake_256(b"tgflow/1 state keys\x00" + label + secret).digest(n)  # noqa: E731
    ident = PrivateKey(RECIPIENT, {"x25519": seed(b"x25519", 32), "ml-kem-768": seed(b"ml-kem-768", 64)})
    signing = PrivateKey(SIGNING, {"ed25519": seed(b"ed25519", 32), "ml-dsa-65": seed(b"ml-dsa-65", 32)})
    return StateKeys(route, (ident.public,), ("the state secret's key",), lambda: [ident], signing)
