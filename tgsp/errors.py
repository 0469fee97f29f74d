"""The one exception tree for tgflow.

Every error the library raises is a ``TgflowError``. The CLI maps each class
to a one-line message, a hint and an exit code (``tgflow_cli/errors.py``);
the library itself never decides exit codes.
"""

from __future__ import annotations


class TgflowError(Exception):
    """Base class. ``hint`` is an optional one-line suggested fix."""

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.hint = hint


# --- bad input (exit 2) -----------------------------------------------------
class InputError(TgflowError):
    """The caller gave something unusable: a flag, a path, a file."""


class NotFoundError(InputError):
    """A named file, folder or key does not exist."""


class UnsafeSourceError(InputError):
    """A folder to pack holds something a package must not: a link, a FIFO,
    a device, a name that is not portable or collides by case (bad input,
    unlike an unsafe entry found inside a package)."""


# --- package problems found while reading or verifying (exit 1) -------------
class PackageError(TgflowError):
    """A package failed a check. ``check`` names which one."""

    check = "format"


class FormatError(PackageError):
    """Not a well-formed TGSP v1 package."""


class UnsafeEntryError(FormatError):
    """An archive entry is a link, a device, a traversal or otherwise unsafe."""


class LimitError(FormatError):
    """A size or count limit was exceeded (oversized entry, bomb)."""


class EntryListError(PackageError):
    check = "entries"


class DigestError(PackageError):
    check = "digests"


class EvidenceError(PackageError):
    check = "evidence"


class SignatureError(PackageError):
    check = "signatures"


class TrustError(SignatureError):
    """Signatures are valid but not from a trusted, unrevoked key."""


class RotationError(TrustError):
    """A key rotation chain is broken (skipped version, bad signature, fork)."""


class RevokedError(TrustError):
    pass


class ExpiredError(PackageError):
    check = "expiry"


class RollbackError(PackageError):
    check = "rollback"


class VerificationFailed(PackageError):
    """Raised by ``VerifyReport.raise_for_failure``; carries the report."""

    def __init__(self, message: str, report, *, hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.report = report
        self.check = report.first_failure.name if report.first_failure else "format"


class SumRefused(PackageError):
    """n2he: the key holder refuses to decrypt a sum (it does not fit the round, lists an update
    that does not pass, differs from the key holder's own sum, or breaks the clipping bound)."""

    check = "sum"


# --- keys (exit 3) -----------------------------------------------------------
class KeyringError(TgflowError):
    pass


class KeyNotFoundError(KeyringError, NotFoundError):
    pass


class KeyExistsError(KeyringError):
    pass


class PassphraseRequiredError(KeyringError):
    """No passphrase source and no terminal to prompt on."""


class WrongPassphraseError(KeyringError):
    """The passphrase does not open the key. Deliberately says nothing more."""


# --- decryption (exit 4) -----------------------------------------------------
class DecryptionError(TgflowError):
    """Opaque on purpose: never says which check failed or why."""

    def __init__(self) -> None:
        super().__init__("decryption failed")


class NotARecipientError(DecryptionError):
    """None of the identities is listed: recipient key ids are public, so say so (as age does).
    A listed identity whose unwrap fails still gets the opaque DecryptionError."""

    def __init__(self, have: list[str], listed: list[str]) -> None:
        TgflowError.__init__(self, f"none of your identities ({_ids(have)}) is a recipient of this package "
                                   f"({_ids(listed)})",
                             hint="ask the sender to encrypt to your recipient key (tgflow key export-public NAME)")


def _ids(keyids: list[str], most: int = 6) -> str:
    shown = ", ".join(str(k)[:16] for k in keyids[:most]) or "none"
    return shown + (f" and {len(keyids) - most} more" if len(keyids) > most else "")


# --- peft run outcomes (exit 10-13, 75) -----------------------------------------
class RoundOutcome(TgflowError):
    """A round ended without a promotable package; ``report`` says why."""

    outcome = "rejected"

    def __init__(self, message: str, report: dict | None = None, *, hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.report = report or {}


class NoveltySkipped(RoundOutcome):
    outcome = "skipped-low-novelty"


class ForgettingExceeded(RoundOutcome):
    outcome = "rejected-forgetting"


class GateFailed(RoundOutcome):
    outcome = "rejected-eval-gate"


class BudgetExhausted(RoundOutcome):
    """The route's privacy budget allows no more training (refused, or stopped at the budget)."""

    outcome = "privacy-budget-exhausted"


class PlanRefused(RoundOutcome):
    """peft run --require-plan: the DP plan's verdict is below the one required; no ε charged."""

    outcome = "refused-plan"


class QuorumNotMet(RoundOutcome):
    """fed aggregate: fewer valid updates than the quorum; nothing written."""

    outcome = "quorum-not-met"


class RouteBusy(TgflowError):
    """Another command holds the route's (or the registry's) lock; nothing changed."""


class Interrupted(TgflowError):
    """SIGTERM or Ctrl-C during training; a checkpoint was written."""


# --- environment (exit 5) ----------------------------------------------------
class OutputError(TgflowError):
    """The output could not be written (permissions, disk full, exists)."""


# --- registries (exit 6, 7) ------------------------------------------------------
class RegistryError(TgflowError):
    """An OCI registry could not be used. What a registry *sends* that fails a check (a bad
    manifest, a digest mismatch) is a PackageError instead: exit 1, like a bad package."""


class RegistryAuthError(RegistryError):
    """The registry refused the credentials, or asked for some and none were given (exit 6)."""


class RegistryUnavailable(RegistryError):
    """The registry could not be reached, dropped the connection or failed (5xx); exit 7, retry."""


class HookFailed(TgflowError):
    """A command the user gave to run after a change (``--on-change``) failed (exit 1)."""


class RegistryConflict(RegistryError):
    """A tag moved while it was being replaced (another editor); the caller retries."""
