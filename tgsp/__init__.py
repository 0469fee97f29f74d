"""tgsp: the TGSP v1 package format library (no torch, typer or rich here).

Public API::

    from tgsp import Keyring, build, sign, verify, unpack, open_package

See docs/format.md for the format and docs/adr/ for the design decisions.
"""

from .builder import BuildResult, build, sign
from .errors import TgflowError
from .keyring import Keyring, passphrase_from_env
from .keys import RECIPIENT, SIGNING, PrivateKey, PublicKey
from .lineage import PublicKeyFile, Revocation
from .package import Limits, open_package
from .signing import Signer, TrustPolicy
from .unpack import UnpackResult, unpack
from .verify import CHECKS, VerifyReport, verify

FORMAT = "tgsp/1"

__all__ = [
    "CHECKS", "FORMAT", "BuildResult", "Keyring", "Limits", "PrivateKey", "PublicKey", "PublicKeyFile",
    "RECIPIENT", "Revocation", "SIGNING", "Signer", "TgflowError", "TrustPolicy", "UnpackResult",
    "VerifyReport", "build", "open_package", "passphrase_from_env", "sign", "unpack", "verify",
]
