"""Passphrases held in a cloud secret store, named by reference.

TGFLOW_PASSPHRASE_SECRET names the secret. Only platforms that cannot mount a
secret as a file need it (SageMaker); it is read only when no file or
environment passphrase is set. Supported: AWS Secrets Manager ARNs, resolved
with boto3 (present on AWS images, or `pip install boto3`).
"""

from __future__ import annotations

from tgsp.errors import PassphraseRequiredError


def fetch(ref: str) -> str:
    if not ref.startswith("arn:aws:secretsmanager:"):
        raise PassphraseRequiredError(f"TGFLOW_PASSPHRASE_SECRET {ref[:40]!r} is not a supported reference",
                                      hint="use an AWS Secrets Manager ARN, or mount the passphrase as a file "
                                           "and set TGFLOW_PASSPHRASE_FILE")
    try:
        import boto3
        from botocore.exceptions import BotoCoreError, ClientError
    except ImportError:
        raise PassphraseRequiredError("TGFLOW_PASSPHRASE_SECRET needs boto3", hint="pip install boto3") from None
    region = ref.split(":")[3]
    try:
        value = boto3.client("secretsmanager", region_name=region).get_secret_value(SecretId=ref).get("SecretString")
    except (BotoCoreError, ClientError) as exc:
        raise PassphraseRequiredError(f"cannot read the passphrase from Secrets Manager: {exc}") from None
    if not value:
        raise PassphraseRequiredError("the Secrets Manager secret holds no string value")
    return value
