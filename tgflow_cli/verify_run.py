"""`tgflow tgsp verify` without typer or rich: the trust policy, the checks and the report.

CI runs `tgflow tgsp verify PKG && deploy` before every deploy, so this is the path that must
start fast: `fast.py` calls it straight from the console script, and the Typer command in
`tgsp_cmds.py` calls the same function, so both give the same result.
"""

from __future__ import annotations

from enum import Enum
from pathlib import Path

import tgsp
from tgsp.errors import InputError, VerificationFailed
from tgsp.verify import load_rollback_state, record_rollback_state

from .common import STATE, config, emit, keyring, output_format, progress
from .stdio import is_dash, no_dash, package_source
from .term import detail, say, show_rows, styled, warn


class Hardware(str, Enum):
    ed25519 = "ed25519"
    all = "all"


def config_path(key: str) -> Path | None:
    value = config().get("tgsp", key)
    return Path(value) if value else None


def policy(trusted, revocations, min_version, state, route=None, kind=None, hardware=None):
    cfg = config()  # flags win; then config.toml
    trusted = trusted or cfg.get("tgsp", "trusted")
    revocations = revocations or cfg.get("tgsp", "revocations")
    state = state or cfg.get("tgsp", "state")
    hardware = hardware or (Hardware(cfg.get("tgsp", "require_hardware")) if cfg.get("tgsp", "require_hardware") else None)
    return keyring().trust_policy(
        trusted=trusted or None, revocation_files=[str(r) for r in revocations or []],
        min_version=min_version, rollback_state=load_rollback_state(state) if state else None,
        route=route, kind=kind, require_hardware=hardware.value if hardware else None)


def warn_not_private(m) -> None:
    pv = m.get("privacy") if isinstance(m, dict) else None
    if isinstance(pv, dict) and pv.get("mode") == "dp" and pv.get("private") is False:
        warn(styled("warning:", "bold yellow"), " this package's DP round ran with a test seed: it is NOT private "
             f"({pv.get('randomness')}); its epsilon means nothing")


def render_report(report) -> None:
    colour = {"ok": "green", "failed": "red", "skipped": "dim", "not-run": "yellow"}
    show_rows(["check", "result", "detail"],
              [[c.name, styled(c.status, colour[c.status]), c.detail] for c in report.checks])
    for n in report.notes:
        say(f"note: {n}")
    say(styled("VERIFIED", "bold green"), f" {report.package_id}") if report.ok else say(styled("REJECTED", "bold red"))


def verify_packages(packages: list[Path], trusted, revocations, min_version, state, route, kind, hardware,
                    json_out: bool, fmt: str | None) -> None:
    """Verify each package; print the report(s); raise if any fails (exit 1)."""
    if sum(is_dash(p) for p in packages) > 1:
        raise InputError("standard input ('-') can be read only once")
    fmt = output_format(fmt, json_out)
    no_dash(state, "a state file, read and then rewritten", "--state")
    state = state or config_path("state")
    reports = [_verify_one(p, trusted, revocations, min_version, state, route, kind, hardware, bool(fmt),
                           len(packages) > 1) for p in packages]
    if fmt:  # one document: the report itself, or all of them
        emit(reports[0].to_dict() if len(reports) == 1 else
             {"ok": all(r.ok for r in reports), "packages": [r.to_dict() for r in reports]}, fmt)
    bad = [r for r in reports if not r.ok]
    if bad:
        STATE.reported = True
        if len(reports) > 1:
            raise VerificationFailed(f"{len(bad)} of {len(reports)} packages failed: "
                                     + ", ".join(r.path for r in bad), bad[0])
        bad[0].raise_for_failure()


def _verify_one(package, trusted, revocations, min_version, state, route, kind, hardware, json_out, many):
    pol = policy(trusted, revocations, min_version, state, route, kind, hardware)  # per package: --state moves
    detail(f"trusting {len(pol.trusted)} key(s) ({'--trusted' if trusted else 'the keyring trust store'}), "
           f"{len(pol.revocations)} revocation(s)")
    with package_source(package) as source:
        size = package.stat().st_size if not is_dash(package) and package.is_file() else None
        with progress("verifying", size) as tick:
            report = tgsp.verify(source, pol, progress=tick)
    report.path = "-" if is_dash(package) else str(package)
    if report.ok and state:
        record_rollback_state(state, report)
    if report.manifest:
        warn_not_private(report.manifest)
    if not json_out:
        if many:
            say(styled(report.path, "bold"))
        render_report(report)
    return report
