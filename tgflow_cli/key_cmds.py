"""tgflow key ...: manage signing and recipient keys."""

from __future__ import annotations

import json
import sys
from enum import Enum
from pathlib import Path
from typing import List, Optional

import typer
from rich.table import Table

from tgsp import clock
from tgsp.atomic import write_bytes
from tgsp.errors import InputError, PackageError

from .flags import OutputFormat
from .common import emit, emit_json, keyring, output_format, passphrase, short
from .term import cells, line, say, show as show_table, styled, warn
from .stdio import no_dash

app = typer.Typer(no_args_is_help=True, help="Generate, list, share, rotate, revoke and audit keys.")

PassFile = typer.Option(None, "--passphrase-file", help="Read the passphrase from this file (else TGFLOW_PASSPHRASE, TGFLOW_PASSPHRASE_FILE, or a prompt).", dir_okay=False)
Json = typer.Option(False, "--json", help="Print machine-readable JSON.")
AllowWeak = typer.Option(False, "--allow-weak-passphrase", help="Accept a passphrase shorter than 12 characters for the new key.")
Pkcs11Uri = typer.Option(None, "--pkcs11", metavar="URI", help="Keep the Ed25519 half in this PKCS#11 token (RFC 7512 URI, e.g. 'pkcs11:token=ci;object=release;id=%01'). Module: TGFLOW_PKCS11_MODULE; PIN: TGFLOW_PKCS11_PIN, TGFLOW_PKCS11_PIN_FILE or a prompt.")


class KeyType(str, Enum):
    signing = "signing"
    recipient = "recipient"
    he = "he"


def _he():
    from tgsp.he_store import HEKeys

    return HEKeys(keyring())


def _he_summary(pub) -> dict:
    return {"name": pub.name, "kind": "he", "keyid": pub.keyid, "version": pub.version, "created": pub.created,
            "context_id": pub.context_id, "params": pub.params}


def _pub_summary(pub) -> dict:
    return {"name": pub.name, "kind": pub.kind, "keyid": pub.keyid, "version": pub.version, "created": pub.created}


@app.command()
def generate(
    name: str = typer.Argument(..., help="A name for the key (A-Z a-z 0-9 . _ -)."),
    type: KeyType = typer.Option(KeyType.signing, "--type", help="signing: Ed25519 + ML-DSA-65. recipient: X25519 + ML-KEM-768. he: a CKKS context (TenSEAL) for privacy.mode n2he; the key holder's."),
    pkcs11: Optional[str] = Pkcs11Uri,
    allow_weak: bool = AllowWeak,
    passphrase_file: Optional[Path] = PassFile,
    json_out: bool = Json,
) -> None:
    """Create a key; its private part is sealed with your passphrase (Argon2id + AES-GCM).
    With --pkcs11, the Ed25519 half is created inside that token (non-extractable).

    Example: TGFLOW_PASSPHRASE_FILE=/run/secrets/pp tgflow key generate release --type signing
    """
    pp = passphrase(passphrase_file, confirm=True, key=name, new=True, allow_weak=allow_weak)
    if type is KeyType.he:
        return _generate_he(name, pp, pkcs11, json_out)
    pub = keyring().generate(name, type.value, pp, pkcs11=pkcs11)
    if json_out:
        return emit_json(_pub_summary(pub))
    say(f"generated {pub.kind} key ", styled(pub.name, "bold"), f" {pub.keyid}")


def _generate_he(name: str, pp, pkcs11: Optional[str], json_out: bool, rotate: bool = False) -> None:
    from runners.n2he import context

    if pkcs11:
        raise InputError("HE keys cannot be held in a PKCS#11 token; their secret is sealed in the keyring")
    pub = context.generate(keyring(), name, pp, rotate=rotate)
    if json_out:
        return emit_json(_he_summary(pub))
    p = pub.params
    say(f"{'rotated' if rotate else 'generated'} HE key ", styled(pub.name, "bold"),
        f" version {pub.version}: CKKS N={p['poly_modulus_degree']}, log Q={sum(p['coeff_mod_bit_sizes'])} "
        f"(128-bit), context {pub.keyid[:16]}; give sites and the aggregator: tgflow key export-public {pub.name}")


@app.command("list")
def list_(json_out: bool = Json, fmt: Optional[str] = OutputFormat) -> None:
    """List own and trusted keys.

    Example: tgflow key list --json   (or -o yaml; -o wide for whole key ids)
    """
    keys = keyring().list() + [_he_info(pub, own) for pub, own in _he().listed()]
    if fmt := output_format(fmt, json_out):
        return emit([k.__dict__ for k in keys], fmt)
    table = Table("name", "type", "key id", "version", "created", "private", "revoked")
    for k in keys:
        table.add_row(*cells(k.name, k.kind, short(k.keyid), k.version, k.created, "yes" if k.private else ""),
                      line(styled("REVOKED", "red")) if k.revoked else "")
    show_table(table) if keys else say("no keys yet: tgflow key generate NAME")


def _he_info(pub, own: bool):
    from tgsp.keyring import KeyInfo

    return KeyInfo(pub.name, "he", pub.keyid, pub.version, pub.created, own, False)


def _he_show(name: str) -> dict:
    store = _he()
    pub = store.public(name)
    own = store.is_own(name)
    return {**_he_summary(pub), "private_in_keyring": own, "revoked": False,
            "versions": [{"version": v["version"], "keyid": v["context_id"][7:], "created": v["created"], "revoked": False}
                         for v in (store.versions(name) if own else [])]}


@app.command()
def show(name: str, json_out: bool = Json) -> None:
    """Show one key: ids, versions, revocation state.

    Example: tgflow key show release
    """
    info = _he_show(name) if _he().exists(name) else keyring().show(name)
    if json_out:
        return emit_json(info)
    for field in ("name", "kind", "keyid", "version", "created", "private_in_keyring", "revoked"):
        say(f"{field:>20}: {info[field]}")
    for v in info.get("versions", []):
        held = v.get("custody")
        where = ("  (" + ", ".join(f"{a} in {c}" for a, c in sorted(held.items())) + ")") if held else ""
        say(f"{'version ' + str(v['version']):>20}: {v['keyid']}{'  REVOKED' if v['revoked'] else ''}{where}")


@app.command("export-public")
def export_public(
    name: str,
    output: Path = typer.Option(..., "-o", "--output", help="Where to write the public key file ('-' for stdout)."),
) -> None:
    """Write a public key file to give to others (includes the rotation chain). For an HE key:
    its public context, without the secret key, for the sites and the aggregator.

    Example: tgflow key export-public release -o release.pub.json
    """
    he = _he()
    pub = he.public(name) if he.exists(name) else keyring().public_file(name)
    data = (json.dumps(pub.to_dict(), indent=2) + "\n").encode()
    if str(output) == "-":
        sys.stdout.write(data.decode())
    else:
        write_bytes(output, data)
        warn(f"wrote {output}")


@app.command("export-secret")
def export_secret(
    name: str = typer.Argument(..., help="An own HE key."),
    to: List[str] = typer.Option(..., "--to", metavar="RECIPIENT", help="A site's recipient key. Repeatable."),
    sign: str = typer.Option(..., "--sign", metavar="KEY", help="Your signing key; sites import only what it signed."),
    output: Path = typer.Option(..., "-o", "--output", help="The package to write (.tgsp)."),
    passphrase_file: Optional[Path] = PassFile,
    json_out: bool = Json,
) -> None:
    """Shared-key custody only (privacy.n2he.custody shared-key, NVFlare's model, weaker; see
    docs/n2he.md): send an HE key's secret to every site, signed and encrypted to them.

    Example: tgflow key export-secret route-he --to site-a --to site-b --sign release -o route-he.secret.tgsp
    """
    no_dash(output, "a package written to a path")
    from runners.n2he import share

    pid = share.export_secret(keyring(), name, list(to), sign, output, passphrase(passphrase_file, key=name))
    if json_out:
        return emit_json({"name": name, "package": str(output), "package_id": pid, "recipients": list(to)})
    warn(f"wrote {output} ({pid[:23]}): HE key {name}'s secret for {', '.join(to)}")


@app.command("import")
def import_(
    file: Path = typer.Argument(..., help="A public key file from 'key export-public', or an HE secret package from 'key export-secret'."),
    name: Optional[str] = typer.Option(None, "--name", help="Store it under this name."),
    signer: Optional[str] = typer.Option(None, "--from", metavar="KEY", help="An HE secret package: the trusted signing key it must be signed by."),
    passphrase_file: Optional[Path] = PassFile,
    json_out: bool = Json,
) -> None:
    """Trust someone's public key (or accept a rotated version of it). With --from, import an HE
    secret shared with this site (shared-key custody), sealed here at once.

    Example: tgflow key import ci-signer.pub.json --name ci
    """
    from tgsp.he_store import is_public_file

    if signer is not None:
        from runners.n2he import share

        pub = share.import_secret(keyring(), file, signer, passphrase(passphrase_file), name)
        if json_out:
            return emit_json(_he_summary(pub))
        return say("imported HE key ", styled(pub.name, "bold"), f" {pub.keyid[:16]} (version {pub.version}, secret sealed)")

    if is_public_file(file):
        from runners.n2he.context import check_public_file

        pub = _he().import_public(file, name, check=check_public_file)
        if json_out:
            return emit_json(_he_summary(pub))
        return say("trusted HE public context ", styled(pub.name, "bold"), f" {pub.keyid[:16]} (version {pub.version})")
    pub = keyring().import_public(file, name)
    if json_out:
        return emit_json(_pub_summary(pub))
    say(f"trusted {pub.kind} key ", styled(pub.name, "bold"), f" {pub.keyid} (version {pub.version})")


@app.command("import-pkcs11")
def import_pkcs11(
    name: str = typer.Argument(..., help="A name for the key in the keyring."),
    uri: str = typer.Argument(..., metavar="URI", help="The existing Ed25519 key in a token (RFC 7512; id= preferred)."),
    allow_weak: bool = AllowWeak,
    passphrase_file: Optional[Path] = PassFile,
    json_out: bool = Json,
) -> None:
    """Adopt an Ed25519 key that already lives in a PKCS#11 token as a new
    signing key (its ML-DSA-65 half is made here and sealed in the keyring).

    Example: TGFLOW_PKCS11_MODULE=/usr/lib/softhsm/libsofthsm2.so tgflow key import-pkcs11 release 'pkcs11:token=ci;id=%01'
    """
    pp = passphrase(passphrase_file, confirm=True, key=name, new=True, allow_weak=allow_weak)
    pub = keyring().generate(name, "signing", pp, pkcs11=uri, adopt=True)
    if json_out:
        return emit_json(_pub_summary(pub))
    say("adopted token key as signing key ", styled(pub.name, "bold"), f" {pub.keyid}")


@app.command()
def rotate(name: str, pkcs11: Optional[str] = Pkcs11Uri, passphrase_file: Optional[Path] = PassFile,
           json_out: bool = Json) -> None:
    """Make a new version of a key. For signing keys the rotation statement is
    signed by both the old and the new key, wherever each lives; verifiers walk
    the chain. --pkcs11 puts the new version's Ed25519 half in a token; without
    it the new version is a software key.

    An HE key gets a new CKKS context; earlier versions still decrypt earlier sums. Rotate HE
    keys on a schedule (privacy.n2he.max_key_age_days) and re-send the public context.

    Example: tgflow key rotate release && tgflow key export-public release -o release.pub.json
    """
    if _he().is_own(name):
        return _generate_he(name, passphrase(passphrase_file, key=name), pkcs11, json_out, rotate=True)
    pub = keyring().rotate(name, passphrase(passphrase_file, key=name), pkcs11=pkcs11)
    if json_out:
        return emit_json(_pub_summary(pub))
    say("rotated ", styled(pub.name, "bold"), f" to version {pub.version}: {pub.keyid}")


@app.command()
def revoke(
    ref: str = typer.Argument(..., metavar="NAME|KEYID", help="An own key's name (its current version) or a key id (prefix)."),
    reason: str = typer.Option(..., "--reason", help="Why, in words (recorded and signed)."),
    at: Optional[str] = typer.Option(None, "--at", help="Revoke from this ISO 8601 time (default: now)."),
    fork: Optional[Path] = typer.Option(None, "--fork", help="Revoke the forked branch in this public key file or package (made with a stolen older version of NAME)."),
    passphrase_file: Optional[Path] = PassFile,
    json_out: bool = Json,
) -> None:
    """Write a signed revocation: packages signed by the key after that time fail.

    Example: tgflow key revoke release --reason "laptop lost"
    """
    kr = keyring()
    if _he().exists(ref):
        raise InputError(f"{ref} is an HE key: HE keys are rotated, not revoked (no package is signed with one)",
                         hint=f"tgflow key rotate {ref}, then re-send its public context")
    branch = _branch_of(fork) if fork else None
    rev = kr.revoke(ref, reason, passphrase(passphrase_file, key=ref), when=clock.parse_user(at) if at else None, branch=branch)
    path = kr.revocation_path(rev.keyid)
    if json_out:
        return emit_json({"keyid": rev.keyid, "revoked_at": clock.fmt(rev.revoked_at), "reason": rev.reason,
                          "file": str(path)})
    say(f"revoked {rev.keyid} from {clock.fmt(rev.revoked_at)}; share {path} (verify --revocations)")


def _branch_of(path: Path):
    """The rotation chain in a public key file, or of a package's signer."""
    from tgsp.errors import TgflowError
    from tgsp.keyring_trust import load_public_file
    from tgsp.lineage import Lineage

    try:
        pub = load_public_file(path)
        if pub.lineage is not None:
            return pub.lineage
    except TgflowError:
        pass
    import tgsp

    with tgsp.open_package(path) as pkg:
        signers = pkg.manifest["signers"]
    if len(signers) != 1:
        raise InputError(f"{path} is neither a signing public key file nor a package with one signer")
    return Lineage.from_dict(signers[0]["lineage"])


@app.command()
def audit(json_out: bool = Json) -> None:
    """Check the keyring's hash-chained audit log; exit 1 where it breaks.

    Example: tgflow key audit --json
    """
    records, brk, head = keyring().audit()
    if json_out:
        emit_json({"ok": brk is None, "records": len(records), "head": head,
                   "break": None if brk is None else {"index": brk.index, "reason": brk.reason},
                   "log": records})
    else:
        for r in records:
            if isinstance(r, dict) and "op" in r:
                say(f"{r.get('seq'):>4} {r.get('time')} {r.get('op'):<9} {r.get('name')} {short(str(r.get('keyid')))}")
    if brk is not None:
        raise PackageError(f"audit log breaks at record {brk.index}: {brk.reason}")
    if not json_out:
        say(f"audit log intact: {len(records)} records, head {short(head)}")
