"""References: ``oci://HOST[:PORT]/REPO[:TAG|@sha256:HEX]`` and ``oci-layout:DIR[:TAG|@sha256:HEX]``.

Parsed strictly by the OCI distribution grammar, so a hostile reference cannot smuggle a
path, a query or a second host into a URL."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from tgsp.errors import InputError

REPO = re.compile(r"^[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*)*\Z")
TAG = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._-]{0,127}\Z")
DIGEST = re.compile(r"^sha256:[0-9a-f]{64}\Z")
HOST = re.compile(r"^(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*"
                  r"|\[[0-9A-Fa-f:.]+\])(?::[0-9]{1,5})?\Z")
SCHEME, LAYOUT = "oci://", "oci-layout:"


@dataclass(frozen=True)
class Ref:
    """A registry repository (``host`` set) or an image layout folder (``layout`` set), and
    at most one of ``tag`` and ``digest``."""

    host: str | None = None
    repo: str | None = None
    layout: Path | None = None
    tag: str | None = None
    digest: str | None = None

    @property
    def reference(self) -> str | None:
        return self.digest or self.tag

    def with_ref(self, tag: str | None = None, digest: str | None = None) -> Ref:
        return Ref(self.host, self.repo, self.layout, tag, digest)

    def __str__(self) -> str:
        base = f"{SCHEME}{self.host}/{self.repo}" if self.host else f"{LAYOUT}{self.layout}"
        return base + (f"@{self.digest}" if self.digest else f":{self.tag}" if self.tag else "")


def is_ref(text: str) -> bool:
    return isinstance(text, str) and (text.startswith(SCHEME) or text.startswith(LAYOUT))


def parse(text: str, *, need_ref: bool = False) -> Ref:
    """``text`` as a Ref; InputError naming what is wrong. ``need_ref``: a tag or digest is required."""
    if not isinstance(text, str) or len(text) > 2048 or any(ord(c) < 0x21 or ord(c) == 0x7f for c in text):
        raise InputError("an OCI reference must be printable text without spaces, at most 2048 characters")
    if text.startswith(SCHEME):
        ref = _registry(text[len(SCHEME):])
    elif text.startswith(LAYOUT):
        ref = _layout(text[len(LAYOUT):])
    else:
        raise InputError(f"{text[:80]!r} is not an OCI reference", hint="write oci://HOST/REPO[:TAG] or oci-layout:DIR[:TAG]")
    if need_ref and ref.reference is None:
        raise InputError(f"{text[:200]} names no tag or digest", hint="add :TAG or @sha256:DIGEST")
    return ref


def _split_ref(rest: str) -> tuple[str, str | None, str | None]:
    if "@" in rest:
        name, digest = rest.rsplit("@", 1)
        if not DIGEST.match(digest):
            raise InputError(f"digest {digest[:80]!r} is not sha256:<64 lowercase hex>")
        return name, None, digest
    slash = rest.rfind("/")
    colon = rest.rfind(":")
    if colon > slash:
        name, tag = rest[:colon], rest[colon + 1:]
        if not TAG.match(tag):
            raise InputError(f"tag {tag[:80]!r} is not a valid OCI tag", hint="letters, digits, '_', '.', '-'; at most 128")
        return name, tag, None
    return rest, None, None


def _registry(rest: str) -> Ref:
    host, sep, path = rest.partition("/")
    if not sep or not HOST.match(host):
        raise InputError(f"{(SCHEME + rest)[:200]} needs a host and a repository: oci://HOST[:PORT]/REPO[:TAG]")
    repo, tag, digest = _split_ref(path)
    if not REPO.match(repo) or len(host) + len(repo) > 255:
        raise InputError(f"repository {repo[:120]!r} is not a valid OCI repository name",
                         hint="lowercase letters, digits, and '.', '_', '-' between them; '/' between parts")
    return Ref(host=host, repo=repo, tag=tag, digest=digest)


def _layout(rest: str) -> Ref:
    folder, tag, digest = rest, None, None
    if "@" in rest:
        folder, _, digest = rest.rpartition("@")
        if not DIGEST.match(digest):
            raise InputError(f"digest {digest[:80]!r} is not sha256:<64 lowercase hex>")
    elif ":" in rest.rsplit("/", 1)[-1]:
        folder, _, tag = rest.rpartition(":")
        if not TAG.match(tag):
            raise InputError(f"tag {tag[:80]!r} is not a valid OCI tag")
    if not folder:
        raise InputError("oci-layout: needs a folder: oci-layout:DIR[:TAG]")
    return Ref(layout=Path(folder), tag=tag, digest=digest)
