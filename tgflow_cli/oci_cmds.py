"""tgflow push / pull: packages as OCI artifacts in registries and image layouts."""

from __future__ import annotations

import os
from pathlib import Path
from typing import List, Optional

import typer

from tgsp.errors import InputError

from . import oci_access, verify_run
from .common import emit_json
from .oci_access import CaFile, PasswordFile, PlainHttp, Username
from .term import say
from .tgsp_cmds import KindPin, Revocations, RoutePin, StateFile, Trusted

MAX_ENV = "TGFLOW_PULL_MAX_BYTES"


def _max_bytes() -> int:
    raw = os.environ.get(MAX_ENV, "")
    if raw and not (raw.isascii() and raw.isdigit() and len(raw) <= 20):
        raise InputError(f"{MAX_ENV} must be a number of bytes")
    return int(raw) if raw else 64 << 30


def push(
    source: str = typer.Argument(..., metavar="PKG|oci-layout:DIR[:TAG]", help="The package file, or a package in an OCI image layout (its referrers go with it)."),
    dest: str = typer.Argument(..., metavar="oci://HOST[:PORT]/REPO[:TAG]", help="Where to store it: a registry repository, or oci-layout:DIR[:TAG]."),
    evidence: bool = typer.Option(True, "--evidence/--no-evidence", help="Attach the package's evidence chain as a referrer."),
    plain_http: bool = PlainHttp, ca_file: Optional[Path] = CaFile, username: Optional[str] = Username,
    registry_password_file: Optional[Path] = PasswordFile, json_out: bool = typer.Option(False, "--json", help="Print machine-readable JSON."),
) -> None:
    """Store a package as an OCI artifact: one layer, the package file itself (its digest is the
    file's SHA-256), with its evidence as a referrer. Prints the manifest digest.

    Example: tgflow push demo-out/support.tgsp oci://localhost:5000/tgflow/support:v1 --plain-http
    """
    from runners.oci import refs, transfer

    oci_access.use(plain_http, ca_file, username, registry_password_file)
    target = refs.parse(dest)
    with transfer.opened(target, oci_access.access(), create=True) as dst:
        if refs.is_ref(source):
            src_ref = refs.parse(source, need_ref=True)
            with transfer.opened(src_ref, oci_access.access()) as src:
                digest, referrers = transfer.copy(src, dst, src_ref.reference, target.tag, _format_check, _max_bytes())
            result = {"digest": digest, "referrers": referrers}
        else:
            pushed = transfer.push_package(Path(source), dst, target.tag, evidence=evidence)
            result = {"digest": pushed.digest, "layer": pushed.layer, "size": pushed.size,
                      "package_id": pushed.package_id, "referrers": list(pushed.referrers)}
    result = {"reference": str(target.with_ref(target.tag, None) if target.tag else target.with_ref(None, result["digest"])),
              **result}
    if json_out:
        return emit_json(result)
    say(f"pushed {result['reference']}")
    say(f"digest {result['digest']}")


def _format_check(path: Path) -> None:
    import tgsp

    with tgsp.open_package(path, check_digests=True):
        pass


def pull(
    source: str = typer.Argument(..., metavar="oci://HOST[:PORT]/REPO[:TAG|@sha256:…]", help="The package's artifact (or oci-layout:DIR[:TAG]). Give -o FILE or --to-layout DIR."),
    output: Optional[Path] = typer.Option(None, "-o", "--output", help="Write the verified package here (atomically).", dir_okay=False),
    to_layout: Optional[Path] = typer.Option(None, "--to-layout", metavar="DIR", help="Mirror the verified artifact and its referrers into this OCI image layout.", file_okay=False),
    trusted: Optional[List[str]] = Trusted, revocations: Optional[List[Path]] = Revocations,
    state: Optional[Path] = StateFile, route: Optional[str] = RoutePin, kind: Optional[str] = KindPin,
    force: bool = typer.Option(False, "--force", help="Replace an existing -o file (atomically, once the new one is verified)."),
    plain_http: bool = PlainHttp, ca_file: Optional[Path] = CaFile, username: Optional[str] = Username,
    registry_password_file: Optional[Path] = PasswordFile, json_out: bool = typer.Option(False, "--json", help="Print machine-readable JSON."),
) -> None:
    """Download a package, check its layer digest and verify it under the same trust policy as
    `tgsp verify`; only then write it. A package that fails exits 1 and leaves nothing.

    Example: tgflow pull oci://localhost:5000/tgflow/support:v1 -o support.tgsp --plain-http
    """
    import tgsp
    from runners.oci import refs, transfer
    from tgsp.verify import record_rollback_state

    if (output is None) == (to_layout is None):
        raise InputError("give one of -o FILE and --to-layout DIR")
    if output is not None and (output.exists() or output.is_symlink()) and not force:
        raise InputError(f"{output} already exists", hint="choose another path, or pass --force to replace it")
    oci_access.use(plain_http, ca_file, username, registry_password_file)
    src_ref = refs.parse(source, need_ref=True)
    state = state or verify_run.config_path("state")
    pol = verify_run.policy(trusted, revocations, None, state, route, kind)

    reports = []

    def check(path: Path):
        report = tgsp.verify(path, pol)
        report.raise_for_failure()
        reports.append(report)
        return report

    with transfer.opened(src_ref, oci_access.access()) as src:
        if output is not None:
            digest, _ = transfer.pull_package(src, src_ref.reference, output, check, _max_bytes(), overwrite=force)
            referrers = []
        else:
            with transfer.opened(refs.Ref(layout=to_layout), oci_access.access(), create=True) as dst:
                digest, referrers = transfer.copy(src, dst, src_ref.reference, src_ref.tag, check, _max_bytes())
    report = reports[-1]
    if state:
        record_rollback_state(state, report)
    result = {"reference": source, "digest": digest, "package_id": report.package_id, "verified": True,
              "output": str(output or f"oci-layout:{to_layout}"), "referrers": referrers}
    if json_out:
        return emit_json(result)
    if src_ref.tag:
        say(f"{src_ref.tag} resolved to {digest}")
    say(f"VERIFIED {report.package_id} -> {result['output']}")

