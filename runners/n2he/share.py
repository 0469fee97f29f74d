"""Shared-key custody (NVFlare's model): the HE secret goes to every site, as a TGSP package
of kind ``he-secret`` signed by its maker and encrypted to the sites' recipient keys. The
secret never touches disk in the clear: it is packed from memory, read back into memory,
checked against its context id and sealed in the receiving keyring at once."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

import tgsp
from tgsp.builder import SourceFile
from tgsp.canonical import parse
from tgsp.errors import FormatError, InputError
from tgsp.he_store import HEKeys, HEPublic
from tgsp.unpack import read_payload

from . import ckks, context

KIND, SECRET, PUBLIC = "he-secret", "he/secret.bin", "he/public.json"


def export_secret(keyring, name: str, recipients: list[str], signer: str, out: Path,
                  passphrase: Callable[[], str]) -> str:
    """Package the current version of HE key ``name`` for ``recipients``. Returns the package id."""
    if not recipients:
        raise InputError("name the sites' recipient keys the HE secret goes to", hint="pass --to NAME (repeatable)")
    store = HEKeys(keyring)
    pub = store.public(name)
    if not store.is_own(name):
        raise InputError(f"HE key {name} is not an own key here: only its holder can share its secret")
    ctx, _ = context.secret(keyring, name, pub.context_id, passphrase)
    secret, public = ckks.secret_bytes(ctx), json.dumps(pub.to_dict()).encode()
    files = [SourceFile(PUBLIC, Path(PUBLIC), len(public), public), SourceFile(SECRET, Path(SECRET), len(secret), secret)]
    built = tgsp.build(".", out, route="he-keys", kind=KIND, files=files,
                       recipients=[keyring.resolve_public(r).key for r in recipients],
                       signers=[keyring.signer(signer, passphrase)],
                       extra={"he_key": {"name": pub.name, "version": pub.version, "context_id": pub.context_id,
                                         "params": pub.params}})
    return built.package_id


def import_secret(keyring, path: Path, signer: str, passphrase: Callable[[], str], name: str | None = None) -> HEPublic:
    """Verify a he-secret package from trusted ``signer``, open it with an own recipient key, and
    seal its secret here (a new HE key, or a new version of one shared before)."""
    policy = keyring.trust_policy(trusted=[signer], kind=KIND)
    own = [k.name for k in keyring.list() if k.private and k.kind == "recipient"]
    idents = [i for n in own for i in keyring.identities(n, passphrase)]
    report, files = read_payload(path, policy, identities=idents)
    if set(files) != {SECRET, PUBLIC}:
        raise InputError(f"{path} is not an HE secret package")
    try:
        pub = HEPublic.from_dict(parse(files[PUBLIC], what="he/public.json"))  # strict JSON
    except FormatError:
        raise InputError(f"{path}: its public context is malformed") from None
    signed = report.manifest.get("he_key")
    if not isinstance(signed, dict) or (signed.get("name"), signed.get("version"), signed.get("context_id"),
                                        signed.get("params")) != (pub.name, pub.version, pub.context_id, pub.params):
        raise InputError(f"{path}: its signed he_key does not describe the context it carries",
                         hint="re-export it from the key holder: tgflow key export-secret")
    params = ckks.Params.from_dict(pub.params)
    ckks.load_secret(files[SECRET], pub.context_id, params)  # the secret belongs to this context
    store = HEKeys(keyring)
    target = name or pub.name
    return store.add_version(target, pub.params, pub.context, files[SECRET], passphrase, new=not store.is_own(target))
