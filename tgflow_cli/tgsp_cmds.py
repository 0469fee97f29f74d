"""tgflow tgsp ...: build, sign, verify, inspect and unpack packages."""

from __future__ import annotations

import os
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import List, Optional

import typer
from rich.table import Table

import tgsp
from tgsp import clock
from tgsp.errors import InputError, NotFoundError
from tgsp.evidence import load_user_events
from tgsp.verify import record_rollback_state

from .flags import OutputFormat
from .common import config, emit, emit_json, keyring, output_format, passphrase, progress, short
from . import timeline, verify_run
from .stdio import is_dash, no_dash, not_a_terminal, output_target, package_source
from .term import cells, say, show, styled, warn

app = typer.Typer(no_args_is_help=True, help="Build, sign, verify, inspect and unpack TGSP packages (.tgsp / .tssp).")

PassFile = typer.Option(None, "--passphrase-file", help="Read the passphrase from this file (else TGFLOW_PASSPHRASE, TGFLOW_PASSPHRASE_FILE, or a prompt).", dir_okay=False)
Json = typer.Option(False, "--json", help="Print machine-readable JSON.")
Trusted = typer.Option(None, "--trusted", help="Trust only these keys (names or public key files). Default: the keyring's trust store.")
Revocations = typer.Option(None, "--revocations", help="Extra revocation files to honour.", exists=False)
MinVersion = typer.Option(None, "--min-version", help="Reject packages whose version is below this floor.")
StateFile = typer.Option(None, "--state", help="Rollback state file: floors per route, raised on success. A route it does not track yet is refused unless --route names it.", dir_okay=False)
RoutePin = typer.Option(None, "--route", help="Accept only packages of this route.")
KindPin = typer.Option(None, "--kind", help="Accept only packages of this kind (adapter, data, ...).")


RequireHardware = typer.Option(None, "--require-hardware", help="Fail unless every trusted signer's signed custody record says its Ed25519 key (ed25519) or both halves (all) are held in a PKCS#11 token.")


def _now() -> clock.Clock:
    """Honour SOURCE_DATE_EPOCH so builds can be bit-for-bit reproducible."""
    epoch = os.environ.get("SOURCE_DATE_EPOCH")
    if epoch and epoch.isdigit():
        fixed = datetime.fromtimestamp(int(epoch), timezone.utc)
        return lambda: fixed
    return clock.utcnow


@app.command()
def build(
    src_dir: Path = typer.Argument(..., help="Folder to pack, e.g. a PEFT adapter folder."),
    output: Path = typer.Option(..., "-o", "--output", help="Package to write (.tgsp or .tssp; '-' for stdout); written atomically; an existing file needs --force."),
    route: str = typer.Option("default", "--route", help="Route key this package belongs to."),
    version: int = typer.Option(0, "--version", min=0, help="Version within the route (rollback protection)."),
    kind: str = typer.Option("files", "--kind", help="What the payload is: adapter, data, files, ..."),
    recipient: Optional[List[str]] = typer.Option(None, "--recipient", help="Encrypt to this recipient key (name or public key file). Repeatable."),
    sign: Optional[List[str]] = typer.Option(None, "--sign", help="Sign with this signing key. Repeatable."),
    evidence: Optional[Path] = typer.Option(None, "--evidence", help="JSONL of events to add to the evidence chain."),
    expires: Optional[str] = typer.Option(None, "--expires", help="ISO 8601 expiry time."),
    chunk_size: int = typer.Option(1 << 20, "--chunk-size", help="AEAD chunk size in bytes."),
    force: bool = typer.Option(False, "--force", help="Replace an existing output file."),
    passphrase_file: Optional[Path] = PassFile,
    json_out: bool = Json,
) -> None:
    """Pack a folder into a package; encrypt to recipients, sign, add evidence.

    Example: tgflow tgsp build ./adapter -o adapter.tgsp --route support --version 3 --recipient ops --sign release
    """
    not_a_terminal(output)
    kr, now = keyring(), _now()
    recipient, sign = recipient or config().get("tgsp", "recipients"), sign or config().get("tgsp", "sign")
    recipients = [kr.resolve_public(r).key for r in recipient or []]
    pp = passphrase(passphrase_file, key=", ".join(sign or []) or None)
    signers = [kr.signer(s, pp) for s in sign or []]
    events = load_user_events(evidence, now()) if evidence else []
    files = tgsp.builder.collect(src_dir)
    if is_dash(output) and json_out:
        raise InputError("-o - writes the package to stdout, so --json cannot share it", hint="drop --json, or give a path")
    with output_target(output) as target, progress("packing", sum(f.size for f in files)) as tick:
        res = tgsp.build(src_dir, target, files=files, route=route, version=version, kind=kind, recipients=recipients,
                         signers=signers, events=events, expires=clock.parse_user(expires, what="--expires") if expires else None,
                         chunk_size=chunk_size, now=now, progress=tick, overwrite=force or is_dash(output))
    where = "<stdout>" if is_dash(output) else str(res.path)
    if json_out:
        return emit_json({"path": where, "package_id": res.package_id, "route": route, "version": version,
                          "files": len(res.manifest["files"]), "signed_by": [s.name for s in signers],
                          "recipients": [r.keyid for r in recipients]})
    (warn if is_dash(output) else say)(f"built {where} {res.package_id}")
    if not signers:
        warn("note: the package is unsigned; sign it with: tgflow tgsp sign PKG --key KEY")


@app.command()
def sign(
    package: Optional[Path] = typer.Argument(None, help="Package to sign."),
    package_opt: Optional[Path] = typer.Option(None, "--package", hidden=True, help="Same as PACKAGE (the spelling in older guides)."),
    key: str = typer.Option(..., "--key", "--key-id", help="Signing key name (--key-id is accepted, as in older guides)."),
    output: Optional[Path] = typer.Option(None, "-o", "--output", help="Write here instead of replacing the package."),
    passphrase_file: Optional[Path] = PassFile,
    json_out: bool = Json,
) -> None:
    """Add a signature (or replace this key's). Checks the package's integrity first.

    Example: tgflow tgsp sign adapter.tgsp --key release
    """
    if (package is None) == (package_opt is None):
        raise InputError("give the package to sign once: tgflow tgsp sign PKG --key KEY")
    package = package or package_opt
    no_dash(output, "a signed copy of the package, written beside it")
    signer = keyring().signer(key, passphrase(passphrase_file, key=key))
    res = tgsp.sign(package, signer, out=output, now=_now())
    if json_out:
        return emit_json({"path": str(res.path), "package_id": res.package_id, "signed_by": signer.name})
    say(f"signed {res.path} with {signer.name} ({short(signer.keyid)}): {res.package_id}")


@app.command()
def verify(
    packages: List[Path] = typer.Argument(..., help="Packages to verify ('-' reads one from stdin)."),
    trusted: Optional[List[str]] = Trusted,
    revocations: Optional[List[Path]] = Revocations,
    min_version: Optional[int] = MinVersion,
    state: Optional[Path] = StateFile,
    route: Optional[str] = RoutePin,
    kind: Optional[str] = KindPin,
    require_hardware: Optional[verify_run.Hardware] = RequireHardware,
    json_out: bool = Json,
    fmt: Optional[str] = OutputFormat,
) -> None:
    """Check format, entries, both signatures, evidence, digests, expiry and rollback.
    Exit 0 only if all hold for every package, 1 if any fails.

    Example: tgflow tgsp verify adapter.tgsp --trusted release.pub.json --json   (or -o yaml)
    """
    verify_run.verify_packages(packages, trusted, revocations, min_version, state, route, kind, require_hardware,
                               json_out, fmt)


@app.command()
def inspect(package: Path = typer.Argument(..., help="Package to list ('-' reads it from stdin)."),
            json_out: bool = Json, fmt: Optional[str] = OutputFormat) -> None:
    """Show what a package says about itself without any key (nothing is trusted):
    manifest, signers with custody, recipients, and the evidence as a timeline.

    Example: tgflow tgsp inspect adapter.tgsp --json   (or -o yaml; -o wide for whole digests)
    """
    fmt = output_format(fmt, json_out)
    with package_source(package) as source:
        info = _package_info(source)
    if fmt:
        for s in info["manifest"]["signers"]:
            s.pop("lineage", None)
        return emit(info, fmt)
    _render_inspect(package, info)


def _package_info(source) -> dict:
    """What a package says about itself (format-checked; nothing trusted)."""
    with tgsp.open_package(source) as pkg:
        m, env = pkg.manifest, pkg.envelope
        return {
            "package_id": pkg.package_id, "manifest": m,
            "signatures": [{"keyid": k, "algorithm": _alg_of(m, k)} for k, _ in env.signatures],
            "recipients": [r["keyid"] for r in (m.get("encryption") or {}).get("recipients", [])],
            "evidence": pkg.evidence, "provenance": pkg.provenance,
        }


@app.command()
def report(
    package: Optional[Path] = typer.Argument(None, help="Package to describe ('-' reads it from stdin); or give --route."),
    output: Path = typer.Option(..., "-o", "--output", help="HTML file to write (atomically; '-' for stdout); an existing file needs --force."),
    route: Optional[str] = typer.Option(None, "--route", metavar="ROUTE", help="Instead of a package: one page for this route's history (with --registry)."),
    registry: Optional[Path] = typer.Option(None, "--registry", metavar="DIR", help="With --route: the registry (default: [route] registry in config.toml).", file_okay=False),
    trusted: Optional[List[str]] = Trusted,
    force: bool = typer.Option(False, "--force", help="Replace an existing output file."),
) -> None:
    """Write one self-contained HTML page about a package for an operator or a
    reviewer: verification against your trust store, the headline task metrics,
    signers, the evidence timeline, the training loss curve, losses before and after
    against the gate, forgetting against its budget, the novelty histogram and the
    privacy record. With --route, one page for a route's history instead: each
    version's metrics over time, promotions and rollbacks, and ε spent against the
    budget. No script and no network: plots are inline SVG.

    Example: tgflow tgsp report adapter.tgsp -o report.html
    (a route: tgflow tgsp report --route support --registry demo-out/registry -o route.html)
    """
    if (package is None) == (route is None):
        raise InputError("give a package or --route ROUTE (one of them)", hint="see: tgflow tgsp report --help")
    page, verdict = _route_page(route, registry, trusted) if route else _package_page(package, trusted)
    if is_dash(output):
        sys.stdout.buffer.write(page)
        return None
    from tgsp.atomic import write_bytes

    write_bytes(output, page, overwrite=force)
    say(f"wrote {output} ({verdict})")


def _package_page(package: Path, trusted) -> tuple[bytes, str]:
    from .report import render

    with package_source(package, named=True) as source:  # read twice: describe, then verify
        info = _package_info(source)
        result = tgsp.verify(source, verify_run.policy(trusted, None, None, None))
    bad = result.first_failure
    verdict = (result.ok, "against this keyring's trust store" if result.ok else f"{bad.name}: {bad.detail}")
    return render(info, verdict).encode("utf-8"), "verified" if result.ok else "NOT verified: " + bad.name


def _route_page(route: str, registry: Optional[Path], trusted) -> tuple[bytes, str]:
    """The verified route index (a bad one refuses, exit 1), and each registered version verified
    against the same trust, pinned to the route and to adapters."""
    from . import route_report
    from .resolve_run import open_registry, trusted_policy

    reg = open_registry(registry, None, trusted_policy(trusted))
    doc = reg.require(route)
    pinned = keyring().trust_policy(trusted=trusted or None, route=route, kind="adapter")
    rows = []
    for entry in doc["packages"][:route_report.MAX_VERSIONS]:
        try:
            path = reg.package_path(route, entry)
        except NotFoundError:
            path = None
        result = tgsp.verify(path, pinned) if path is not None and path.is_file() else None
        bad = result.first_failure if result else None
        rows.append({**entry, "round": (entry.get("evaluation") or {}).get("round"), "verified": bool(result and result.ok),
                     "privacy": (result.manifest or {}).get("privacy") if result and result.ok else None,
                     "why": "missing from the registry" if result is None else None if result.ok else
                     f"{bad.name}: {bad.detail}"})
    failed = sum(not r["verified"] for r in rows)
    return route_report.render(doc, rows).encode("utf-8"), f"{len(rows)} versions" + (
        f", {failed} NOT verified" if failed else ", all verified")


def _render_inspect(package, info: dict) -> None:
    m = info["manifest"]
    say(styled(str(package), "bold"), f"  {info['package_id']}  (not verified: run tgsp verify)")
    say(f"format {m['format']}  kind {m['kind']}  route {m['route']}  version {m['version']}  created {m['created']}"
        + (f"  expires {m['expires']}" if "expires" in m else ""))
    files = Table("path", "size", "sha256", "stored")
    for f in m["files"]:
        files.add_row(*cells(f["path"], f["size"], short(f["sha256"]), "encrypted" if "encryption" in m else "plain"))
    show(files)
    custody = m.get("custody") or {}
    for s in m["signers"]:
        held = custody.get(s["keyid"])
        where = ", ".join(f"{a} in {v}" for a, v in sorted(held.items())) if isinstance(held, dict) else "custody not recorded"
        say(f"signer {s['name']} v{s['version']} key {short(s['keyid'])} signed {s['signed_at']} ({where})")
    for sig in info["signatures"]:
        say(f"  {sig['algorithm']} signature by component key {short(sig['keyid'])}")
    for r in info["recipients"]:
        say(f"recipient {short(r)}")
    verify_run.warn_not_private(m)
    if isinstance(m.get("privacy"), dict):  # written by peft run; not part of the format
        say(timeline.privacy(m["privacy"]).replace("privacy:", "privacy record:", 1))
    say(f"parent adapter: {timeline.parent_of(info['evidence'])}")
    say(styled("timeline", "bold"))
    for e in info["evidence"]:
        say(f"  {e['seq']:>3} {e['time']}  {timeline.event_line(e)}")


def _alg_of(m, keyid: str) -> str:
    from tgsp.keys import PublicKey

    for s in m["signers"]:
        for alg, kid in PublicKey.from_dict({"kind": "signing", "public": s["public"]}).component_ids().items():
            if kid == keyid:
                return alg
    return "unknown"


@app.command()
def unpack(
    package: Path = typer.Argument(..., help="Package to extract ('-' reads it from stdin)."),
    output: Path = typer.Option(..., "-o", "--output", help="New (or empty) folder to extract into."),
    identity: Optional[List[str]] = typer.Option(None, "--identity", help="Recipient key to decrypt with: a name in the keyring, or a key file (mode 600) carried to this machine. Repeatable."),
    trusted: Optional[List[str]] = Trusted,
    revocations: Optional[List[Path]] = Revocations,
    min_version: Optional[int] = MinVersion,
    state: Optional[Path] = StateFile,
    route: Optional[str] = RoutePin,
    kind: Optional[str] = KindPin,
    require_hardware: Optional[verify_run.Hardware] = RequireHardware,
    passphrase_file: Optional[Path] = PassFile,
    json_out: bool = Json,
) -> None:
    """Verify, then extract safely (decrypting with --identity). Nothing is
    written unless every check and every file passes.

    Example: tgflow tgsp unpack adapter.tgsp -o ./adapter --identity ops
    """
    no_dash(output, "a folder of decrypted files")
    kr = keyring()
    no_dash(state, "a state file, read and then rewritten", "--state")
    state = state or verify_run.config_path("state")
    policy = verify_run.policy(trusted, revocations, min_version, state, route, kind, require_hardware)
    pp = passphrase(passphrase_file, key=", ".join(identity or []) or None)
    identities = [k for name in identity or [] for k in kr.identities(name, pp)]
    with package_source(package, named=True) as source:
        size = source.stat().st_size if source.is_file() else None
        with progress("unpacking", size) as tick:
            res = tgsp.unpack(source, output, policy, identities=identities, progress=tick)
    if state:
        record_rollback_state(state, res.report)
    if json_out:
        return emit_json({"path": str(res.path), "package_id": res.report.package_id, "files": res.files,
                          "bytes": res.bytes, "verify": res.report.to_dict()})
    say(f"verified {res.report.package_id}; unpacked {res.files} files ({res.bytes} bytes) to {res.path}")
