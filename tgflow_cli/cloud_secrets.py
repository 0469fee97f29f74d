"""Passphrases held in a cloud secret store, named by reference.

TGFLOW_PASSPHRASE_SECRET names the secret. Only platforms that cannot mount a
secret as a file need it (SageMaker); it is read only when no file or
environment passphrase is set. Supported:
  arn:aws:secretsmanager:...            AWS Secrets Manager, with boto3
  projects/P/secrets/S/versions/V       GCP Secret Manager, with google-cloud-secret-manager
  https://V.vault.azure.net/secrets/S   Azure Key Vault, with azure-keyvault-secrets + azure-identity
Credentials come from the platform (the job's role or service account).
"""

from __future__ import annotations

import re

from tgsp.errors import PassphraseRequiredError

_GCP = re.compile(r"^projects/[^/]+/secrets/[^/]+/versions/[^/]+$")
_AZURE = re.compile(r"^(https://[a-z0-9-]+\.vault\.azure\.net)/secrets/([A-Za-z0-9-]+)(?:/([0-9a-f]{32}))?$")


def fetch(ref: str, *, gcp_client=None, azure_client=None) -> str:
    if _GCP.match(ref):
        return _fetch_gcp(ref, gcp_client)
    if _AZURE.match(ref):
        return _fetch_azure(ref, azure_client)
    if not ref.startswith("arn:aws:secretsmanager:"):
        # Never echo it: a value that is not a reference may be the passphrase itself.
        raise PassphraseRequiredError("TGFLOW_PASSPHRASE_SECRET is not a supported reference (its value is not shown)",
                                      hint="use an AWS Secrets Manager ARN, a GCP Secret Manager version name or an "
                                           "Azure Key Vault secret URL, "
                                           "or mount the passphrase as a file "
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


def _fetch_gcp(ref: str, client=None) -> str:
    try:
        from google.api_core import exceptions as gexc
        from google.auth import exceptions as auth_exc
        from google.cloud import secretmanager
    except ImportError:
        raise PassphraseRequiredError("TGFLOW_PASSPHRASE_SECRET needs google-cloud-secret-manager",
                                      hint="pip install google-cloud-secret-manager") from None
    try:
        client = client or secretmanager.SecretManagerServiceClient()
        data = client.access_secret_version(name=ref).payload.data
    except gexc.GoogleAPIError as exc:
        raise PassphraseRequiredError(f"cannot read the passphrase from Secret Manager: {exc}") from None
    except auth_exc.GoogleAuthError as exc:  # no credentials on this machine
        raise PassphraseRequiredError(f"cannot read the passphrase from Secret Manager: no usable Google credentials "
                                      f"({str(exc).splitlines()[0][:120]})",
                                      hint="run where a service account is attached, or set "
                                           "GOOGLE_APPLICATION_CREDENTIALS") from None
    if not data:
        raise PassphraseRequiredError("the Secret Manager secret version is empty")
    return data.decode("utf-8")


def _fetch_azure(ref: str, client=None) -> str:
    vault, name, version = _AZURE.match(ref).groups()
    try:
        from azure.core.exceptions import AzureError
        from azure.keyvault.secrets import SecretClient
    except ImportError:
        raise PassphraseRequiredError("TGFLOW_PASSPHRASE_SECRET needs azure-keyvault-secrets and azure-identity",
                                      hint="pip install azure-keyvault-secrets azure-identity") from None
    try:
        if client is None:
            from azure.identity import DefaultAzureCredential

            client = SecretClient(vault, DefaultAzureCredential())
        value = client.get_secret(name, version).value
    except AzureError as exc:
        raise PassphraseRequiredError(f"cannot read the passphrase from Key Vault: {str(exc).splitlines()[0]}") from None
    if not value:
        raise PassphraseRequiredError("the Key Vault secret is empty")
    return value
