"""Exception types onto exit codes, with default hints.

The codes and what they mean live in one table, ``runners/outcomes.py``
(also read by docs/cli.md and every export backend); this module only
decides which code an exception gets.
"""

from __future__ import annotations

import errno

from runners import outcomes
from tgsp import errors as E


_C = outcomes.code
OK, FAILED, USAGE, KEY, DECRYPT, OUTPUT = _C("ok"), _C("failed"), _C("usage"), _C("key"), _C("decrypt"), _C("output")
INTERRUPTED, TERMINATED, BUSY, UNCHANGED = _C("interrupted"), _C("terminated"), _C("route-busy"), _C("unchanged")
SKIPPED, FORGETTING, GATE, BUDGET = (_C("skipped-low-novelty"), _C("rejected-forgetting"), _C("rejected-eval-gate"),
                                     _C("privacy-budget-exhausted"))
RESUMABLE, QUORUM, PLAN = _C("interrupted-resumable"), _C("quorum-not-met"), _C("refused-plan")
REG_AUTH, REG_DOWN = _C("registry-auth"), _C("registry-unavailable")

MEANINGS: dict[int, str] = outcomes.meanings()

# Most specific first; the first match wins.
TABLE: list[tuple[type[BaseException], int, str | None]] = [
    (E.NoveltySkipped, SKIPPED, "nothing new to learn; the route state is unchanged"),
    (E.ForgettingExceeded, FORGETTING, "no package written; see the report in the route's state folder"),
    (E.GateFailed, GATE, "no package written; see the report in the route's state folder"),
    (E.BudgetExhausted, BUDGET, "no package written; the ledger is in the route's state folder (docs/privacy.md)"),
    (E.PlanRefused, PLAN, "no epsilon charged; tgflow privacy plan --spec SPEC shows the numbers"),
    (E.QuorumNotMet, QUORUM, "nothing written; the report lists each refused update and why"),
    (E.RouteBusy, BUSY, "another run or command holds this route; nothing changed; retry later"),
    (E.Interrupted, RESUMABLE, "re-run the same command to resume from the checkpoint"),
    (E.DecryptionError, DECRYPT, "check that you are a recipient and the identity key is the right one"),
    (E.WrongPassphraseError, KEY, None),
    (E.PassphraseRequiredError, KEY,
     "set TGFLOW_PASSPHRASE or TGFLOW_PASSPHRASE_FILE, or pass --passphrase-file"),
    (E.KeyNotFoundError, KEY, "see: tgflow key list"),
    (E.KeyringError, KEY, None),
    (E.PackageError, FAILED, None),
    (E.RegistryAuthError, REG_AUTH, "check the credentials: ~/.docker/config.json, or --username with "
                                    "TGFLOW_REGISTRY_PASSWORD or --registry-password-file"),
    (E.RegistryUnavailable, REG_DOWN, "check the host, port, --ca-file or --plain-http; retry later"),
    (E.RegistryConflict, BUSY, "another editor changed the route index meanwhile; retry"),
    (E.RegistryError, FAILED, None),
    (E.HookFailed, FAILED, None),
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
    from . import extras  # only an error needs it

    if isinstance(exc, ModuleNotFoundError) and (extra := extras.for_module(exc.name)):
        return (f"{extra.feature} needs the optional module {exc.name!r}, which is not installed",
                f"pip install 'tgflow[{extra.name}]' (see: tgflow doctor)", USAGE)
    if isinstance(exc, OSError) and exc.errno in _WRITE_ERRNOS:  # a write the code did not wrap itself
        where = f" {exc.filename}" if exc.filename else ""
        return f"cannot write{where}: {exc.strerror}", "check free space and permissions of the output folder", OUTPUT
    return f"internal error: {type(exc).__name__}: {exc}", "re-run with --debug and report it", FAILED
