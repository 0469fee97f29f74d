"""The one table of exit codes: what each means, and whether a retry can help.

Read by the CLI (``tgflow_cli/errors.py`` maps exceptions onto these codes),
by ``docs/cli.md``, and by every export backend (retry policies, the
job spec's ``exit_codes``). Nothing here imports torch or the CLI.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Outcome:
    code: int
    name: str
    meaning: str
    retry: bool  # a scheduler should run the job again (resume, or the route was busy)


OUTCOMES: tuple[Outcome, ...] = (
    Outcome(0, "ok", "ok (peft run: packaged; with --skip-ok also: nothing new; route resolve: a new package)", False),
    Outcome(1, "failed", "verification or policy failure", False),
    Outcome(2, "usage", "usage or bad input", False),
    Outcome(3, "key", "key or passphrase problem", False),
    Outcome(4, "decrypt", "decryption failed (opaque)", False),
    Outcome(5, "output", "output not writable", False),
    Outcome(6, "registry-auth", "the OCI registry refused the credentials (or needs some); nothing written", False),
    Outcome(7, "registry-unavailable", "the OCI registry could not be reached or failed (network, TLS, 5xx, a dropped "
                                       "connection); nothing written; retry later", True),
    Outcome(10, "skipped-low-novelty", "peft run: round skipped (too little novel data)", False),
    Outcome(11, "rejected-forgetting", "peft run: adapter rejected by the forgetting budget", False),
    Outcome(12, "rejected-eval-gate", "peft run: adapter rejected by the evaluation gate", False),
    Outcome(13, "privacy-budget-exhausted", "peft run: the route's privacy budget is exhausted", False),
    Outcome(14, "quorum-not-met", "fed aggregate: fewer valid updates than the quorum; nothing written", False),
    Outcome(15, "refused-plan", "peft run --require-plan: the DP plan's verdict is below the one required; no "
                                "epsilon charged", False),
    Outcome(20, "unchanged", "route resolve: the alias still names the package recorded in --state", False),
    Outcome(73, "route-busy", "route busy: another command holds the route's lock; nothing changed, retry later", True),
    Outcome(75, "interrupted-resumable", "peft run: interrupted, checkpoint saved; re-run to resume", True),
    Outcome(130, "interrupted", "interrupted (SIGINT, Ctrl-C)", False),
    Outcome(143, "terminated", "terminated (SIGTERM); nothing half-written; re-run", True),
)

BY_CODE = {o.code: o for o in OUTCOMES}
BY_NAME = {o.name: o for o in OUTCOMES}


def code(name: str) -> int:
    return BY_NAME[name].code


def meanings() -> dict[int, str]:
    return {o.code: o.meaning for o in OUTCOMES}


def retry_codes() -> tuple[int, ...]:
    return tuple(o.code for o in OUTCOMES if o.retry)


def final_codes() -> tuple[int, ...]:
    """Codes a scheduled ``peft run --skip-ok`` can end with where a retry cannot help
    (10 is reported as 0 under --skip-ok; 14, 20 and 130 never come from a scheduled round)."""
    return tuple(o.code for o in OUTCOMES if not o.retry and o.code not in (0, 10, 14, 20, 130))
