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


def test_passphrase_from_azure_key_vault_over_real_tls(tmp_path):
    """The real Key Vault client (challenge auth, TLS enforced) against a local HTTPS endpoint."""
    import datetime
    import ipaddress
    import json
    import ssl
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    pytest.importorskip("azure.keyvault.secrets")
    from azure.core.credentials import AccessToken, AccessTokenInfo
    from azure.keyvault.secrets import SecretClient
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    from tgflow_cli.cloud_secrets import fetch
    from tgsp.errors import PassphraseRequiredError

    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(key.public_key())
            .serial_number(1).not_valid_before(now - datetime.timedelta(hours=1))
            .not_valid_after(now + datetime.timedelta(hours=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), True).sign(key, hashes.SHA256()))
    (tmp_path / "c.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (tmp_path / "k.pem").write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                       serialization.NoEncryption()))
    seen = []

    class Vault(BaseHTTPRequestHandler):
        def log_message(self, *a):
            pass

        def do_GET(self):
            if "Authorization" not in self.headers:  # Key Vault's challenge
                self.send_response(401)
                self.send_header("WWW-Authenticate", 'Bearer authorization="https://login.microsoftonline.com/t", '
                                                     'resource="https://vault.azure.net"')
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            seen.append(self.path)
            if not self.path.startswith("/secrets/tgflow-pp"):
                body, code = b'{"error": {"code": "SecretNotFound", "message": "not found"}}', 404
            else:
                body, code = json.dumps({"value": "from-key-vault", "id": f"https://127.0.0.1/secrets/tgflow-pp/{'a' * 32}",
                                         "attributes": {"enabled": True}}).encode(), 200
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Vault)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(tmp_path / "c.pem", tmp_path / "k.pem")
    server.socket = ctx.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()

    class Identity:  # what DefaultAzureCredential hands out inside Azure ML
        def get_token(self, *scopes, **kw):
            return AccessToken("token", 2**31)

        def get_token_info(self, *scopes, options=None):
            return AccessTokenInfo("token", 2**31)

    try:
        client = SecretClient(f"https://127.0.0.1:{server.server_port}", Identity(), verify_challenge_resource=False,
                              connection_verify=str(tmp_path / "c.pem"))
        ref = "https://acme-kv.vault.azure.net/secrets/tgflow-pp"
        assert fetch(ref, azure_client=client) == "from-key-vault"
        with pytest.raises(PassphraseRequiredError, match="Key Vault"):
            fetch("https://acme-kv.vault.azure.net/secrets/missing", azure_client=client)
        assert seen and seen[0].startswith("/secrets/tgflow-pp")
    finally:
        server.shutdown()
