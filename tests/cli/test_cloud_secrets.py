"""TGFLOW_PASSPHRASE_SECRET resolves a Secrets Manager ARN (AWS emulated offline by moto)."""

from __future__ import annotations

import pytest

from tgflow_cli.main import main

moto = pytest.importorskip("moto")


@pytest.fixture
def aws(monkeypatch):
    for k, v in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "eu-west-1"}.items():
        monkeypatch.setenv(k, v)
    with moto.mock_aws():
        import boto3

        arn = boto3.client("secretsmanager", region_name="eu-west-1").create_secret(
            Name="tgflow-pp", SecretString="from-secrets-manager")["ARN"]
        yield arn


def test_passphrase_from_secrets_manager(home, monkeypatch, aws, capsys):
    monkeypatch.delenv("TGFLOW_PASSPHRASE")
    monkeypatch.setenv("TGFLOW_PASSPHRASE_SECRET", aws)
    assert main(["key", "generate", "k"]) == 0
    # the key is sealed with exactly that passphrase
    from tgsp import Keyring

    Keyring(home).signer("k", lambda: "from-secrets-manager")


def test_missing_secret_is_a_key_error(home, monkeypatch, aws, capsys):
    monkeypatch.delenv("TGFLOW_PASSPHRASE")
    monkeypatch.setenv("TGFLOW_PASSPHRASE_SECRET", aws.replace("tgflow-pp", "nope"))
    assert main(["key", "generate", "k"]) == 3
    assert "Secrets Manager" in capsys.readouterr().err


def test_unsupported_reference(home, monkeypatch, capsys):
    monkeypatch.delenv("TGFLOW_PASSPHRASE")
    monkeypatch.setenv("TGFLOW_PASSPHRASE_SECRET", "vault://something")
    assert main(["key", "generate", "k"]) == 3
    assert "not a supported reference" in capsys.readouterr().err
