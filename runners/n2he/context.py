"""The HE context a role works under, from the keyring: sites and the aggregator get the
public one (never a secret key), the key holder its own secret one."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from tgsp import clock
from tgsp.errors import InputError
from tgsp.he_store import HEKeys, HEPublic

from . import ckks


@dataclass
class Public:
    file: HEPublic
    params: ckks.Params
    ctx: Any  # tenseal.Context, public

    @property
    def id(self) -> str:
        return self.file.context_id


def public(keyring, ref: str, *, max_age_days: int | None = None, now: clock.Clock = clock.utcnow) -> Public:
    """The public context ``ref`` names (an HE key name or public file), its parameters checked
    (>= 128-bit), and, with ``max_age_days``, not older than that: keys rotate on a schedule."""
    pub = HEKeys(keyring).public(ref)
    params = ckks.Params.from_dict(pub.params)
    if max_age_days is not None:
        age = (now() - pub.created_at).total_seconds() / 86400
        if age > max_age_days:
            raise InputError(f"HE context {pub.name} (version {pub.version}) is {age:.0f} days old, over "
                             f"privacy.n2he.max_key_age_days {max_age_days}",
                             hint=f"the key holder rotates it (tgflow key rotate {pub.name}) and re-sends "
                                  f"the public context (tgflow key export-public {pub.name})")
    return Public(pub, params, ckks.load_public(pub.context, params))


def check_public_file(pub: HEPublic) -> None:
    """What ``key import`` trusts: the same checks a round makes, on the deserialized context
    (CKKS, no secret key, the declared ring, modulus and scale, >= 128-bit), so a secret
    context, random bytes, BFV or parameters that disagree never reach the trust store."""
    ckks.load_public(pub.context, ckks.Params.from_dict(pub.params))


def secret(keyring, name: str, context_id: str, passphrase: Callable[[], str]):
    """The key holder's secret context for ``context_id`` (any version of HE key ``name``)."""
    store = HEKeys(keyring)
    version = next((v for v in store.versions(name) if v["context_id"] == context_id), None)
    if version is None:
        raise InputError(f"HE key {name} has no version with context {context_id[:23]}",
                         hint="decrypt with the HE key the sites encrypted to (its he.context)")
    params = ckks.Params.from_dict(version["params"])
    return ckks.load_secret(store.secret(name, passphrase, context_id), context_id, params), params


def generate(keyring, name: str, passphrase: Callable[[], str], *, rotate: bool = False,
             params: ckks.Params = ckks.DEFAULT) -> HEPublic:
    """A new HE key (or, with ``rotate``, a new version of one): the secret context sealed."""
    ctx = ckks.new_secret_context(params)
    return HEKeys(keyring).add_version(name, params.to_dict(), ckks.public_bytes(ctx), ckks.secret_bytes(ctx),
                                       passphrase, new=not rotate)
