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


def test_passphrase_from_gcp_secret_manager_over_real_grpc():
    """The real client, over real gRPC, against an in-process Secret Manager service."""
    from concurrent import futures

    grpc = pytest.importorskip("grpc")
    from google.cloud import secretmanager_v1
    from google.cloud.secretmanager_v1.services.secret_manager_service.transports import (
        SecretManagerServiceGrpcTransport)

    from tgflow_cli.cloud_secrets import fetch
    from tgsp.errors import PassphraseRequiredError

    name = "projects/acme/secrets/tgflow-pp/versions/latest"
    T = secretmanager_v1.types

    def access(request, context):
        if request.name != name:
            context.abort(grpc.StatusCode.NOT_FOUND, "no such secret version")
        return T.AccessSecretVersionResponse(name=name, payload=T.SecretPayload(data=b"from-gcp"))

    handler = grpc.method_handlers_generic_handler("google.cloud.secretmanager.v1.SecretManagerService", {
        "AccessSecretVersion": grpc.unary_unary_rpc_method_handler(
            access, request_deserializer=T.AccessSecretVersionRequest.deserialize,
            response_serializer=T.AccessSecretVersionResponse.serialize)})
    server = grpc.server(futures.ThreadPoolExecutor(2))
    server.add_generic_rpc_handlers((handler,))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        client = secretmanager_v1.SecretManagerServiceClient(
            transport=SecretManagerServiceGrpcTransport(channel=grpc.insecure_channel(f"127.0.0.1:{port}")))
        assert fetch(name, gcp_client=client) == "from-gcp"
        with pytest.raises(PassphraseRequiredError, match="Secret Manager"):
            fetch(name.replace("tgflow-pp", "other"), gcp_client=client)
    finally:
        server.stop(None)
