"""The HTTP side of a registry: one httpx client, authentication, redirects, bounded reads.

What the distribution API does with it lives in ``registry.py``. Every response body is read
with a cap; a redirect is followed only to the same origin, except a blob download, which may
go to another host over HTTPS (GHCR, ECR and GCR serve blobs from a CDN) and then carries no
credentials. Plain HTTP is used only when the caller says so (``--plain-http``)."""

from __future__ import annotations

import os
import re
import ssl
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlencode, urljoin, urlsplit

import httpx

from tgsp.errors import (FormatError, InputError, LimitError, NotFoundError, RegistryAuthError, RegistryConflict,
                         RegistryError, RegistryUnavailable)
from tgsp.canonical import parse
from tgsp.inputfile import read_input

from . import auth
from .auth import Credentials

MAX_ERROR, MAX_TOKEN = 64 << 10, 1 << 20
REDIRECTS = 5
_CHALLENGE = re.compile(r'(\w+)="([^"]*)"')


@dataclass(frozen=True)
class Access:
    """How to reach registries: the transport choices a command was given."""

    plain_http: bool = False
    ca_file: Path | None = None
    credentials: Credentials | None = None  # explicit (--username); else looked up per host
    timeout: float = 60.0

    @classmethod
    def from_env(cls, env=os.environ, *, plain_http: bool = False, ca_file: Path | None = None,
                 username: str | None = None, password_file: Path | None = None) -> Access:
        """Flags, then TGFLOW_REGISTRY_PLAIN_HTTP=1, TGFLOW_REGISTRY_CA_FILE, TGFLOW_REGISTRY_USERNAME
        and TGFLOW_REGISTRY_PASSWORD (for commands without the flags, such as `peft run`)."""
        plain = plain_http or env.get("TGFLOW_REGISTRY_PLAIN_HTTP", "") in ("1", "true", "yes")
        ca = ca_file or (Path(env["TGFLOW_REGISTRY_CA_FILE"]) if env.get("TGFLOW_REGISTRY_CA_FILE") else None)
        return cls(plain_http=bool(plain), ca_file=ca, credentials=auth.explicit(username, password_file, env))

    def tls(self) -> ssl.SSLContext | bool:
        if self.ca_file is None:
            return True
        read_input(self.ca_file, "CA file", max_bytes=4 << 20)  # a clear error for a missing file
        try:
            return ssl.create_default_context(cafile=str(self.ca_file))
        except ssl.SSLError:
            raise InputError(f"{self.ca_file} holds no PEM certificate", hint="--ca-file takes PEM CA certificates") from None


class Http:
    """One registry host."""

    def __init__(self, host: str, access: Access) -> None:
        self.host, self.access = host, access
        self.base = ("http://" if access.plain_http else "https://") + host
        self.creds = access.credentials or auth.lookup(host)
        self._auth: str | None = None
        self._client = httpx.Client(verify=access.tls(), follow_redirects=False,
                                    timeout=httpx.Timeout(access.timeout, connect=min(access.timeout, 15.0)))

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> Http:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # --- one request -------------------------------------------------------------------
    def request(self, method: str, path: str, *, scope: str, headers: dict | None = None, content=None,
                ok: tuple[int, ...] = (200,), what: str = "", cdn: bool = False) -> httpx.Response:
        """Send, authenticate once on a 401, follow redirects by the rules above; a streamed
        response whose status is in ``ok`` (the caller closes it), else the matching error."""
        url = path if path.startswith(("http://", "https://")) else self.base + path
        if _origin(url) != _origin(self.base):  # an upload Location on another host: no credentials go there
            raise RegistryError(f"{self.host} sent {what or 'a request'} to another host "
                                f"({urlsplit(url).netloc[:80]}); refused")
        resp = self._send(method, url, headers or {}, content, scope)
        for _ in range(REDIRECTS):
            if resp.status_code not in (301, 302, 303, 307, 308) or "location" not in resp.headers:
                break
            url = self._redirect(resp, url, what, cdn)
            same = _origin(url) == _origin(self.base)
            method = "GET" if resp.status_code == 303 else method
            resp.close()
            resp = self._send(method, url, headers or {}, content, scope, with_auth=same)
        if resp.status_code in ok:
            return resp
        raise self._failure(resp, what or f"{method} {path}")

    def _send(self, method, url, headers, content, scope, with_auth=True) -> httpx.Response:
        for attempt in (0, 1):
            h = dict(headers)
            if with_auth and self._auth:
                h["Authorization"] = self._auth
            body = content() if callable(content) else content  # a streamed body is made afresh for each send
            try:
                resp = self._client.send(self._client.build_request(method, url, headers=h, content=body), stream=True)
            except httpx.TransportError as e:
                raise unavailable(self.host, e) from None
            if resp.status_code != 401 or attempt or not with_auth:
                return resp
            challenge = resp.headers.get("www-authenticate", "")
            resp.close()
            self._authenticate(challenge, scope)
        return resp

    def _redirect(self, resp: httpx.Response, url: str, what: str, cdn: bool) -> str:
        target = urljoin(url, resp.headers["location"])
        if _origin(target) == _origin(self.base):
            return target
        if cdn and urlsplit(target).scheme == "https":
            return target
        resp.close()
        raise RegistryError(f"{self.host} redirected {what or 'a request'} to another host "
                            f"({urlsplit(target).netloc[:80]}); refused",
                            hint="only blob downloads may move to another host, and only over HTTPS")

    # --- authentication -----------------------------------------------------------------
    def _authenticate(self, challenge: str, scope: str) -> None:
        kind = challenge.split(" ", 1)[0].lower()
        if kind == "basic":
            if self.creds is None:
                raise RegistryAuthError(f"{self.host} needs credentials and none were found for it")
            self._auth = self.creds.basic()
        elif kind == "bearer":
            self._auth = "Bearer " + self._token(dict(_CHALLENGE.findall(challenge)), scope)
        else:
            raise RegistryAuthError(f"{self.host} asks for an authentication scheme tgflow does not speak "
                                    f"({kind[:20]!r}); it speaks Basic and Bearer")

    def _token(self, params: dict[str, str], scope: str) -> str:
        realm = params.get("realm", "")
        where = urlsplit(realm)
        plain_here = where.scheme == "http" and self.access.plain_http and where.netloc == self.host
        if where.scheme != "https" and not plain_here:  # credentials go there: never in clear to another host
            raise RegistryAuthError(f"{self.host} names a token service that is not an HTTPS URL "
                                    "(plain HTTP only on the registry's own host, with --plain-http)")
        query = {k: v for k, v in (("service", params.get("service")), ("scope", params.get("scope") or scope)) if v}
        headers = {"Authorization": self.creds.basic()} if self.creds else {}
        try:
            resp = self._client.send(self._client.build_request(
                "GET", realm + ("&" if "?" in realm else "?") + urlencode(query), headers=headers), stream=True)
        except httpx.TransportError as e:
            raise unavailable(urlsplit(realm).netloc, e) from None
        if resp.status_code in (401, 403):
            resp.close()
            raise RegistryAuthError(self._refused(resp.status_code))
        if resp.status_code != 200:
            resp.close()
            raise RegistryUnavailable(f"{self.host}'s token service answered {resp.status_code}")
        try:
            doc = parse(read_capped(resp, MAX_TOKEN, "the token service's answer"))
            token = doc.get("token") or doc.get("access_token")
        except (FormatError, AttributeError):
            token = None
        if not isinstance(token, str) or not re.fullmatch(r"[\x21-\x7e]{1,65536}", token):
            raise RegistryAuthError(f"{self.host}'s token service gave no usable token")
        return token

    def _refused(self, status: int) -> str:
        who = f"the credentials of {self.creds.username!r} (from {self.creds.source})" if self.creds else "anonymous access"
        return f"{self.host} refused {who} ({status})"

    # --- errors -------------------------------------------------------------------------
    def _failure(self, resp: httpx.Response, what: str) -> Exception:
        status = resp.status_code
        code = _error_code(read_capped(resp, MAX_ERROR, what, strict=False))
        if status in (401, 403):
            return RegistryAuthError(self._refused(status) + f" for {what}")
        if status == 404:
            return NotFoundError(f"{self.host}: {what}: not found ({code or 404})")
        if status == 412:
            return RegistryConflict(f"{self.host}: {what}: the tag moved meanwhile (412)")
        if status == 429 or status >= 500:
            return RegistryUnavailable(f"{self.host}: {what}: the registry answered {status}{' ' + code if code else ''}")
        return RegistryError(f"{self.host}: {what}: the registry refused it ({status}{' ' + code if code else ''})")


def read_capped(resp: httpx.Response, limit: int, what: str, *, strict: bool = True) -> bytes:
    """The whole body, at most ``limit`` bytes; ``strict``: LimitError past it (else cut)."""
    declared = resp.headers.get("content-length", "")
    if strict and declared.isdigit() and int(declared) > limit:
        resp.close()
        raise LimitError(f"{what} is {int(declared)} bytes, over the {limit}-byte limit")
    buf = bytearray()
    try:
        for chunk in resp.iter_bytes():
            buf.extend(chunk)
            if len(buf) > limit:
                if strict:
                    raise LimitError(f"{what} is over the {limit}-byte limit")
                break
    except httpx.TransportError as e:
        raise unavailable(resp.request.url.host, e) from None
    finally:
        resp.close()
    return bytes(buf[:limit])


def unavailable(host: str, e: Exception) -> RegistryUnavailable:
    reason = {httpx.ConnectError: "could not connect", httpx.TimeoutException: "timed out",
              httpx.RemoteProtocolError: "dropped the connection or broke the protocol"}
    text = next((v for k, v in reason.items() if isinstance(e, k)), type(e).__name__)
    if "CERTIFICATE_VERIFY_FAILED" in str(e) or "SSL" in str(e):
        text = "failed the TLS check (pass --ca-file with its CA, or --plain-http for a plain-HTTP registry)"
    return RegistryUnavailable(f"registry {host}: {text}")


def _origin(url: str) -> tuple[str, str]:
    parts = urlsplit(url)
    return parts.scheme, parts.netloc


def _error_code(body: bytes) -> str:
    """The registry's first error code (UPPER_SNAKE), nothing else of what it sent."""
    try:
        code = parse(body)["errors"][0]["code"]
    except (FormatError, KeyError, IndexError, TypeError):
        return ""
    return code if isinstance(code, str) and re.fullmatch(r"[A-Z_]{1,40}", code) else ""


def json_object(raw: bytes, what: str) -> dict:
    """A JSON object from a registry or layout (strict: depth-capped, no duplicate keys), or FormatError."""
    doc = parse(raw, what=what)
    if not isinstance(doc, dict):
        raise FormatError(f"{what} is not a JSON object")
    return doc
