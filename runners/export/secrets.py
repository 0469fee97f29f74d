"""Refuse to emit anything that looks like a secret.

Exported job specs travel through git, CI logs and cloud consoles. Secrets
must only appear as references (a Kubernetes secretKeyRef, a Secrets Manager
ARN, a Key Vault reference, a Databricks secret scope, a GCP Secret Manager
name), never as literal values.
"""

from __future__ import annotations

import contextlib
import os
import re
from typing import Any, Iterator, Mapping, Sequence

from tgsp.errors import InputError, TgflowError
from tgsp.keyring import passphrase_from_env

_SECRET_NAME = re.compile(r"(PASS(WORD|PHRASE)?|SECRET|TOKEN|API[_-]?KEY|PRIVATE[_-]?KEY|CREDENTIAL|ACCESS[_-]?KEY)",
                          re.IGNORECASE)
_SECRET_VALUE = [
    (re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----"), "a PEM private key"),
    (re.compile(r"-----BEGIN PGP PRIVATE KEY BLOCK-----"), "a PGP private key"),
    (re.compile(r"\bhf_[A-Za-z0-9]{30,}\b"), "a Hugging Face token"),
    (re.compile(r"\bsk-(proj-|ant-|svcacct-)?[A-Za-z0-9_-]{20,}"), "an OpenAI-style API key"),
    (re.compile(r"\bglpat-[A-Za-z0-9_-]{20,}"), "a GitLab token"),
    (re.compile(r"\bAIza[0-9A-Za-z_-]{35}\b"), "a Google API key"),
    (re.compile(r"://:[^/\s@]+@"), "a password in a URL"),
    (re.compile(r"(?i)[?&](access_token|token|api[_-]?key|key|password|passwd|secret|client_secret|auth|code)="
                r"[^&\s#]{8,}"), "a token in a URL query string"),
    (re.compile(r"\b(AKIA|ASIA)[0-9A-Z]{16}\b"), "an AWS access key id"),
    (re.compile(r"\bgh[pousr]_[A-Za-z0-9]{30,}\b"), "a GitHub token"),
    (re.compile(r"\bxox[abposr]-[A-Za-z0-9-]{10,}"), "a Slack token"),
    (re.compile(r"\beyJ[A-Za-z0-9_-]{10,}\.[A-Za-z0-9_-]{10,}\.[A-Za-z0-9_-]{10,}"), "a JWT"),
    (re.compile(r"\bdapi[0-9a-f]{32}\b"), "a Databricks token"),
    (re.compile(r"(?i)\b(AccountKey|SharedAccessSignature|sig)=[A-Za-z0-9%+/=]{20,}"), "an Azure key or SAS"),
    (re.compile(r"://[^/\s:@]+:[^/\s@]+@"), "credentials in a URL"),
    (re.compile(r"\"private\"\s*:\s*\""), "a private key field"),
]
# Keys that name or point to a secret rather than hold one (secretName, *_FILE, ...).
_REFERENCE_KEY = re.compile(r"(?i)(name|ref|reference|arn|scope|id|file|path|mount|uri|url)$")
# References that are allowed where a secret-named key appears.
_REFERENCE = re.compile(r"^(/secrets/|/run/secrets/|arn:aws:secretsmanager:|projects/[^/]+/secrets/|"
                        r"\{\{secrets/|https://[a-z0-9-]+\.vault\.azure\.net/secrets/|\$\{\{)")


def _walk(obj: Any, path: str) -> Iterator[tuple[str, str | None, Any]]:
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from _walk(v, f"{path}.{k}" if path else str(k))
            if isinstance(v, (str, int, float)) and not isinstance(v, bool):
                yield f"{path}.{k}" if path else str(k), str(k), v
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            if isinstance(v, dict) and "name" in v and "value" in v and len(v) == 2:
                yield f"{path}[{i}]", str(v["name"]), v["value"]  # k8s / azure style env entries
            yield from _walk(v, f"{path}[{i}]")
            if isinstance(v, str):
                yield f"{path}[{i}]", None, v


def check(obj: Any, where: str) -> None:
    """Raise InputError naming the first secret-looking literal in ``obj``."""
    for path, key, value in _walk(obj, ""):
        text = str(value)
        for pattern, what in _SECRET_VALUE:
            if pattern.search(text):
                raise InputError(f"{where}: {path} looks like {what}; refusing to write a secret into a job spec",
                                 hint="pass secrets as references (a Kubernetes Secret, a secrets-manager ARN, ...)")
        if key and _SECRET_NAME.search(key) and isinstance(value, str) and value and not _REFERENCE.match(value) \
                and not _REFERENCE_KEY.search(key):
            raise InputError(f"{where}: {path} ({key}) holds a literal value; secrets may only be references",
                             hint="use a file path under /secrets or a secrets-manager reference")


def _strings(obj: Any) -> Iterator[str]:
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield str(k)
            yield from _strings(v)
    elif isinstance(obj, list):
        for v in obj:
            yield from _strings(v)
    elif isinstance(obj, str):
        yield obj


def passphrases(env: Mapping[str, str] = os.environ, files: Sequence[str] = ()) -> list[str]:
    """The passphrase this shell would use, from the environment, its file, or ``files``
    (config.toml's [keys] passphrase_file)."""
    found = [env["TGFLOW_PASSPHRASE"]] if env.get("TGFLOW_PASSPHRASE") else []
    for path in [env.get("TGFLOW_PASSPHRASE_FILE"), *files]:
        if path:
            with contextlib.suppress(TgflowError):
                found.append(passphrase_from_env(path, {}) or "")
    return [p for p in found if len(p) >= 4]


def check_not_passphrase(obj: Any, where: str, env: Mapping[str, str] = os.environ, files: Sequence[str] = ()) -> None:
    """Refuse output that holds the passphrase itself, whatever key it sits under."""
    secrets_ = passphrases(env, files)
    for text in _strings(obj):
        if any(p in text for p in secrets_):
            raise InputError(f"{where}: a value equals or contains the passphrase from the environment; "
                             "refusing to write it into a job spec",
                             hint="pass it as a reference (a secret scope, a Secret, a secrets-manager ARN)")
