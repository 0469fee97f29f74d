"""The one table from exception type to exit code and default hint.

Exit codes (documented in docs/cli.md):
  0  ok
  1  verification or policy failure (package rejected, trust, audit broken)
  2  usage or bad input (flags, missing or malformed files)
  3  key problem (missing key, wrong or missing passphrase)
  4  decryption failed (deliberately opaque)
  5  output could not be written
  10 peft run: round skipped (too little novel data)
  11 peft run: adapter rejected by the forgetting budget
  12 peft run: adapter rejected by the evaluation gate
  13 peft run: the route's privacy budget is exhausted (refused, or stopped at the budget)
  75 peft run: interrupted (SIGTERM); checkpoint saved, re-run to resume
  130 interrupted (SIGINT, Ctrl-C)
  143 terminated (SIGTERM or SIGHUP outside peft run's training loop)
"""

from __future__ import annotations

import errno

from tgsp import errors as E

OK, FAILED, USAGE, KEY, DECRYPT, OUTPUT, INTERRUPTED, TERMINATED = 0, 1, 2, 3, 4, 5, 130, 143
SKIPPED, FORGETTING, GATE, BUDGET, RESUMABLE = 10, 11, 12, 13, 75

# The one table of exit codes: what each means (docs/cli.md, the exports' job_spec.json).
MEANINGS: dict[int, str] = {
    OK: "ok (peft run: packaged; with --skip-ok also: nothing new)",
    FAILED: "verification or policy failure",
    USAGE: "usage or bad input",
    KEY: "key or passphrase problem",
    DECRYPT: "decryption failed (opaque)",
    OUTPUT: "output not writable",
    SKIPPED: "peft run: round skipped (too little novel data)",
    FORGETTING: "peft run: adapter rejected by the forgetting budget",
    GATE: "peft run: adapter rejected by the evaluation gate",
    BUDGET: "peft run: the route's privacy budget is exhausted",
    RESUMABLE: "peft run: interrupted, checkpoint saved; re-run to resume",
    INTERRUPTED: "interrupted (SIGINT, Ctrl-C)",
    TERMINATED: "terminated (SIGTERM); nothing half-written; re-run",
}

# Most specific first; the first match wins.
TABLE: list[tuple[type[BaseException], int, str | None]] = [
    (E.NoveltySkipped, SKIPPED, "nothing new to learn; the route state is unchanged"),
    (E.ForgettingExceeded, FORGETTING, "no package written; see the report in the route's state folder"),
    (E.GateFailed, GATE, "no package written; see the report in the route's state folder"),
    (E.BudgetExhausted, BUDGET, "no package written; the ledger is in the route's state folder (docs/privacy.md)"),
    (E.Interrupted, RESUMABLE, "re-run the same command to resume from the checkpoint"),
    (E.DecryptionError, DECRYPT, "check that you are a recipient and the identity key is the right one"),
    (E.WrongPassphraseError, KEY, None),
    (E.PassphraseRequiredError, KEY,
     "set TGFLOW_PASSPHRASE or TGFLOW_PASSPHRASE_FILE, or pass --passphrase-file"),
    (E.KeyNotFoundError, KEY, "see: tgflow key list"),
    (E.KeyringError, KEY, None),
    (E.PackageError, FAILED, None),
    (E.OutputError, OUTPUT, None),
    (E.InputError, USAGE, None),
    (E.TgflowError, USAGE, None),
]


_WRITE_ERRNOS = {errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOSPC, errno.EDQUOT, errno.EFBIG}


def classify(exc: BaseException) -> tuple[str, str | None, int]:
    """(one-line message, hint or None, exit code) for any error."""
    for kind, code, hint in TABLE:
        if isinstance(exc, kind):
            message = str(exc).splitlines()[0] if str(exc) else kind.__name__
            return message, getattr(exc, "hint", None) or hint, code
    if isinstance(exc, KeyboardInterrupt):
        return "interrupted", None, INTERRUPTED
    if isinstance(exc, OSError) and exc.errno in _WRITE_ERRNOS:  # a write the code did not wrap itself
        where = f" {exc.filename}" if exc.filename else ""
        return f"cannot write{where}: {exc.strerror}", "check free space and permissions of the output folder", OUTPUT
    return f"internal error: {type(exc).__name__}: {exc}", "re-run with --debug and report it", FAILED
