"""tgsp: the TGSP v1 package format library (no torch, typer or rich here).

Public API::

    from tgsp import Keyring, build, sign, verify, unpack, open_package

See docs/format.md for the format and docs/adr/ for the design decisions.
"""

import importlib

# ``verify`` and ``unpack`` name both a module and its function: bound here, after the
# module's import (which sets the attribute to the module), so the function wins.
from .unpack import UnpackResult, unpack
from .verify import CHECKS, VerifyReport, verify

FORMAT = "tgsp/1"

# Loaded on first use (PEP 562), so ``import tgsp.verify`` or ``tgflow --version``
# pays only for what it touches: a CLI that starts fast is a feature (issue #31).
_WHERE = {
    "BuildResult": "builder", "build": "builder", "sign": "builder", "TgflowError": "errors",
    "Keyring": "keyring", "passphrase_from_env": "keyring", "RECIPIENT": "keys", "SIGNING": "keys",
    "PrivateKey": "keys", "PublicKey": "keys", "PublicKeyFile": "lineage", "Revocation": "lineage",
    "Limits": "package", "open_package": "package", "Signer": "signing", "TrustPolicy": "signing",
}


def __getattr__(name: str):
    if name in _WHERE:
        value = getattr(importlib.import_module(f".{_WHERE[name]}", __name__), name)
        globals()[name] = value
        return value
    try:  # a submodule, as ``tgsp.builder`` was before it was loaded lazily
        return importlib.import_module(f".{name}", __name__)
    except ModuleNotFoundError as exc:
        if exc.name != f"{__name__}.{name}":
            raise
    raise AttributeError(f"module 'tgsp' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_WHERE))


__all__ = [
    "CHECKS", "FORMAT", "BuildResult", "Keyring", "Limits", "PrivateKey", "PublicKey", "PublicKeyFile",
    "RECIPIENT", "Revocation", "SIGNING", "Signer", "TgflowError", "TrustPolicy", "UnpackResult",
    "VerifyReport", "build", "open_package", "passphrase_from_env", "sign", "unpack", "verify",
]
