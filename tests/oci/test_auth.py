"""Credentials and TLS against a real registry: docker-registry with htpasswd (bcrypt) auth over
TLS with a self-signed certificate, so --ca-file, --username, the Docker config and credential
helpers are exercised for real. The password must never appear in any output."""

from __future__ import annotations

import base64
import json

from tests.helpers import cli
from tests.oci.conftest import PASSWORD, USER


def _no_secret(out: str, err: str) -> None:
    assert PASSWORD not in out and PASSWORD not in err
    assert base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode() not in out + err


def test_username_with_password_from_the_environment_and_ca_file(secure_registry, world, capsys, monkeypatch, tmp_path):
    pkg = world.package(1)
    ref = f"oci://{secure_registry.host}/tgflow/support:v1"
    monkeypatch.setenv("TGFLOW_REGISTRY_PASSWORD", PASSWORD)
    code, out, err = cli(capsys, "push", pkg, ref, "--ca-file", secure_registry.ca, "--username", USER, "--debug")
    assert code == 0, err
    _no_secret(out, err)
    code, out, err = cli(capsys, "pull", ref, "-o", tmp_path / "got.tgsp", "--ca-file", secure_registry.ca,
                         "--username", USER, "--debug")
    assert code == 0, err
    assert (tmp_path / "got.tgsp").read_bytes() == pkg.read_bytes()
    _no_secret(out, err)


def test_password_file(secure_registry, world, capsys, tmp_path):
    (tmp_path / "pw").write_text(PASSWORD + "\n")
    code, out, err = cli(capsys, "push", world.package(1), f"oci://{secure_registry.host}/t/s:v1", "--ca-file",
                         secure_registry.ca, "--username", USER, "--registry-password-file", tmp_path / "pw")
    assert code == 0, err
    _no_secret(out, err)


def test_no_credentials_and_wrong_credentials_exit_6(secure_registry, world, capsys, monkeypatch):
    ref = f"oci://{secure_registry.host}/tgflow/support:v1"
    code, out, err = cli(capsys, "push", world.package(1), ref, "--ca-file", secure_registry.ca)
    assert code == 6 and "needs credentials and none were found" in err and "hint:" in err
    monkeypatch.setenv("TGFLOW_REGISTRY_PASSWORD", PASSWORD + "-wrong")
    code, out, err = cli(capsys, "push", world.package(1), ref, "--ca-file", secure_registry.ca, "--username", USER)
    assert code == 6 and f"refused the credentials of {USER!r} (from TGFLOW_REGISTRY_PASSWORD)" in err
    assert "wrong" not in err
    monkeypatch.delenv("TGFLOW_REGISTRY_PASSWORD")
    code, out, err = cli(capsys, "push", world.package(1), ref, "--ca-file", secure_registry.ca, "--username", USER)
    assert code == 6 and "needs a password" in err  # never a flag value: there is no --password


def test_an_unknown_certificate_exits_7_and_names_the_fix(secure_registry, world, capsys):
    code, out, err = cli(capsys, "push", world.package(1), f"oci://{secure_registry.host}/tgflow/support:v1")
    assert code == 7 and "TLS" in err and "--ca-file" in err


def test_docker_config_auths_and_a_credential_helper(secure_registry, world, capsys, monkeypatch, tmp_path):
    docker = tmp_path / "docker"
    docker.mkdir()
    auth = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
    (docker / "config.json").write_text(json.dumps({"auths": {f"https://{secure_registry.host}": {"auth": auth}}}))
    ref = f"oci://{secure_registry.host}/tgflow/support:v1"
    code, out, err = cli(capsys, "push", world.package(1), ref, "--ca-file", secure_registry.ca)
    assert code == 0, err
    _no_secret(out, err)
    # a credential helper, run as Docker runs it: the host on stdin, JSON on stdout
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    helper = bin_dir / "docker-credential-tgtest"
    helper.write_text(f"#!/bin/sh\nread host\n[ \"$host\" = \"{secure_registry.host}\" ] || exit 1\n"
                      f"echo '{{\"Username\": \"{USER}\", \"Secret\": \"{PASSWORD}\"}}'\n")
    helper.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:" + __import__("os").environ["PATH"])
    (docker / "config.json").write_text(json.dumps({"credHelpers": {secure_registry.host: "tgtest"}}))
    code, out, err = cli(capsys, "pull", ref, "-o", tmp_path / "got.tgsp", "--ca-file", secure_registry.ca)
    assert code == 0, err
    _no_secret(out, err)
    (docker / "config.json").write_text(json.dumps({"credHelpers": {secure_registry.host: "missing-helper"}}))
    code, out, err = cli(capsys, "pull", ref, "-o", tmp_path / "x.tgsp", "--ca-file", secure_registry.ca)
    assert code == 6 and "docker-credential-missing-helper" in err and "not installed" in err
