"""Registry credentials, found where the container tools keep them, never taken from a flag value.

In order: ``--username`` with a password from ``--registry-password-file`` or ``$TGFLOW_REGISTRY_PASSWORD``;
then ``$REGISTRY_AUTH_FILE`` (podman, skopeo), ``$DOCKER_CONFIG/config.json`` or
``~/.docker/config.json``: a credential helper (``credHelpers`` for the host, else ``credsStore``)
or the stored ``auths`` entry. None found: anonymous. The password is never printed or logged:
``Credentials`` hides it from ``repr``, and errors name only the host and the user."""

from __future__ import annotations

import base64
import binascii
import json
import os
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from tgsp.errors import InputError, RegistryAuthError
from tgsp.inputfile import read_input

PASSWORD_ENV, USERNAME_ENV = "TGFLOW_REGISTRY_PASSWORD", "TGFLOW_REGISTRY_USERNAME"
MAX_CONFIG = 1 << 20
HELPER_TIMEOUT = 30.0


@dataclass(frozen=True)
class Credentials:
    username: str
    password: str = field(repr=False)
    source: str = ""  # where they came from, for messages (never the secret)

    def basic(self) -> str:
        return "Basic " + base64.b64encode(f"{self.username}:{self.password}".encode()).decode()


def explicit(username: str | None, password_file: Path | None, env=os.environ) -> Credentials | None:
    """``--username`` (or $TGFLOW_REGISTRY_USERNAME) with its password from a file or the environment."""
    username = username or env.get(USERNAME_ENV) or None
    if password_file is not None and username is None:
        raise InputError("--registry-password-file needs --username (or TGFLOW_REGISTRY_USERNAME)")
    if username is None:
        return None
    if password_file is not None:
        raw = read_input(password_file, "registry password file", max_bytes=4096)
        password = raw.decode("utf-8", "replace").rstrip("\r\n")
        if "\n" in password or not password:
            raise InputError(f"{password_file} must hold the password on one line")
        return Credentials(username, password, f"--registry-password-file {password_file}")
    password = env.get(PASSWORD_ENV)
    if not password:
        raise RegistryAuthError(f"--username {username} needs a password",
                                hint=f"set {PASSWORD_ENV} or pass --registry-password-file FILE (never a flag value)")
    return Credentials(username, password, PASSWORD_ENV)


def config_files(env=os.environ) -> list[Path]:
    files = []
    if env.get("REGISTRY_AUTH_FILE"):
        files.append(Path(env["REGISTRY_AUTH_FILE"]))
    if env.get("DOCKER_CONFIG"):
        files.append(Path(env["DOCKER_CONFIG"]) / "config.json")
    elif env.get("HOME"):
        files.append(Path(env["HOME"]) / ".docker" / "config.json")
    return files


def lookup(host: str, env=os.environ) -> Credentials | None:
    """The stored credentials for ``host`` (``HOST[:PORT]``), or None."""
    for path in config_files(env):
        if not path.is_file():
            continue
        try:
            doc = json.loads(read_input(path, "registry auth file", max_bytes=MAX_CONFIG))
        except (ValueError, UnicodeDecodeError):
            raise InputError(f"{path} is not valid JSON", hint="fix or move it (docker login rewrites it)") from None
        if not isinstance(doc, dict):
            raise InputError(f"{path} is not a Docker config object")
        found = _from_doc(doc, host, path)
        if found is not None:
            return found
    return None


def _from_doc(doc: dict, host: str, path: Path) -> Credentials | None:
    helpers = doc.get("credHelpers") if isinstance(doc.get("credHelpers"), dict) else {}
    helper = helpers.get(host) or doc.get("credsStore")
    if isinstance(helper, str) and helper:
        found = run_helper(helper, host)
        if found is not None:
            return found
    auths = doc.get("auths") if isinstance(doc.get("auths"), dict) else {}
    for key, entry in auths.items():
        if _host_of(key) == host and isinstance(entry, dict) and isinstance(entry.get("auth"), str):
            try:
                user, sep, password = base64.b64decode(entry["auth"], validate=True).decode().partition(":")
            except (binascii.Error, UnicodeDecodeError):
                raise InputError(f"{path}: the stored auth for {host} is not base64 of user:password") from None
            if sep and user:
                return Credentials(user, password, str(path))
    return None


def _host_of(key: str) -> str:
    for prefix in ("https://", "http://"):
        if key.startswith(prefix):
            key = key[len(prefix):]
    return key.split("/", 1)[0]


def run_helper(name: str, host: str) -> Credentials | None:
    """``docker-credential-<name> get``, as Docker runs it: the server on stdin, JSON out."""
    if not name.replace("-", "").replace("_", "").isalnum():
        raise InputError(f"credential helper name {name[:40]!r} is not a plain name")
    try:
        proc = subprocess.run([f"docker-credential-{name}", "get"], input=host.encode(), capture_output=True,
                              timeout=HELPER_TIMEOUT, check=False)
    except FileNotFoundError:
        raise RegistryAuthError(f"credential helper docker-credential-{name} (named in the Docker config) is not "
                                "installed", hint="install it, or remove it from the config") from None
    except subprocess.TimeoutExpired:
        raise RegistryAuthError(f"credential helper docker-credential-{name} did not answer in {HELPER_TIMEOUT:.0f} s") from None
    if proc.returncode != 0:
        return None  # "credentials not found in native keychain": anonymous, as Docker does
    try:
        doc = json.loads(proc.stdout[:MAX_CONFIG])
        user, secret = doc["Username"], doc["Secret"]
    except (ValueError, KeyError, TypeError):
        raise RegistryAuthError(f"credential helper docker-credential-{name} gave an answer that is not "
                                "{Username, Secret} JSON") from None
    if not isinstance(user, str) or not isinstance(secret, str):
        raise RegistryAuthError(f"credential helper docker-credential-{name} gave a non-string username or secret")
    return Credentials(user, secret, f"docker-credential-{name}")
