"""One repository of a registry, through the OCI distribution API (v1.1).

The same operations as an image layout (``layout.py``): manifests by tag or digest, blobs
streamed with their digest checked, chunked and resumable uploads, tags, and referrers (the
Referrers API, or the ``sha256-<hex>`` tag fallback where a registry has none, as the
distribution spec says)."""

from __future__ import annotations

import hashlib
import re
from typing import BinaryIO, Callable

import httpx

from tgsp.errors import DigestError, FormatError, LimitError, NotFoundError, RegistryError, RegistryUnavailable

from . import artifact
from .client import Http, json_object, read_capped, unavailable

CHUNK = 64 << 20  # one PATCH per 64 MiB: a round trip each, and at most that much sent again on resume
UPLOAD_TRIES = 4
MAX_TAG_PAGES = 100
MAX_TAG_PAGE = 1 << 20
MAX_TAGS = 100_000


class Repository:
    def __init__(self, http: Http, repo: str) -> None:
        self.http, self.repo = http, repo
        self.where = f"{http.host}/{repo}"
        self._pull, self._push = f"repository:{repo}:pull", f"repository:{repo}:pull,push"

    # --- manifests ----------------------------------------------------------------------
    def get_manifest(self, reference: str) -> tuple[bytes, str, str]:
        """(bytes, media type, digest) of a manifest; the digest is checked against a digest
        reference and against the registry's Docker-Content-Digest."""
        resp = self.http.request("GET", f"/v2/{self.repo}/manifests/{reference}", scope=self._pull,
                                 headers={"Accept": artifact.ACCEPT}, what=f"manifest {self.where}:{reference}")
        said = resp.headers.get("docker-content-digest")
        media = resp.headers.get("content-type", "").split(";")[0].strip()
        raw = read_capped(resp, artifact.MAX_MANIFEST, f"manifest {self.where}:{reference}")
        digest = "sha256:" + hashlib.sha256(raw).hexdigest()
        if reference.startswith("sha256:") and digest != reference:
            raise DigestError(f"{self.where} sent a manifest whose digest is {digest}, not the {reference} asked for")
        if said and said != digest:
            raise DigestError(f"{self.where}:{reference}: the manifest's digest is {digest}, but the registry says {said[:80]}")
        return raw, media, digest

    def resolve(self, reference: str) -> str | None:
        """The digest a tag names now, or None if there is no such tag."""
        try:
            return self.get_manifest(reference)[2]
        except NotFoundError:
            return None

    def put_manifest(self, raw: bytes, media_type: str, reference: str, *, if_match: str | None = None) -> str:
        digest = "sha256:" + hashlib.sha256(raw).hexdigest()
        headers = {"Content-Type": media_type}
        if if_match:
            headers["If-Match"] = f'"{if_match}"'
        resp = self.http.request("PUT", f"/v2/{self.repo}/manifests/{reference}", scope=self._push, headers=headers,
                                 content=raw, ok=(200, 201), what=f"pushing manifest {self.where}:{reference}")
        said, subject = resp.headers.get("docker-content-digest"), resp.headers.get("oci-subject")
        resp.close()
        if said and said != digest:
            raise DigestError(f"{self.where} stored the manifest as {said[:80]}, not {digest}")
        self._subject_api = bool(subject)
        return digest

    # --- blobs --------------------------------------------------------------------------
    def has_blob(self, digest: str) -> bool:
        try:
            self.http.request("HEAD", f"/v2/{self.repo}/blobs/{digest}", scope=self._pull, what=f"blob {digest}").close()
        except NotFoundError:
            return False
        return True

    def get_blob(self, digest: str, size: int, sink: Callable[[bytes], None]) -> None:
        """Stream the blob into ``sink``; DigestError unless it is exactly ``size`` bytes of ``digest``."""
        resp = self.http.request("GET", f"/v2/{self.repo}/blobs/{digest}", scope=self._pull, cdn=True,
                                 what=f"blob {self.where}@{digest}")
        h, got = hashlib.sha256(), 0
        try:
            for chunk in resp.iter_bytes(1 << 20):
                got += len(chunk)
                if got > size:
                    raise DigestError(f"{self.where} sent more than the {size} bytes of blob {digest}")
                h.update(chunk)
                sink(chunk)
        except httpx.TransportError as e:
            raise unavailable(self.http.host, e) from None
        finally:
            resp.close()
        if got != size or "sha256:" + h.hexdigest() != digest:
            raise DigestError(f"blob {digest} from {self.where} is {got} bytes with digest sha256:{h.hexdigest()}; "
                              f"the manifest says {size} bytes of {digest}")

    def put_blob(self, digest: str, size: int, source: BinaryIO) -> None:
        """Upload unless present: one PUT up to CHUNK bytes, else PATCHes of CHUNK bytes that
        resume from the registry's ``Range`` after a dropped connection. Bodies are streamed
        from ``source`` (a seekable file) in MiB pieces: memory does not grow with the blob."""
        if self.has_blob(digest):
            return
        where = self._start_upload()
        if size <= CHUNK:
            self._finish(where, digest, _piece(source, 0, size), size)
            return
        offset, tries = 0, 0
        while offset < size:
            length = min(CHUNK, size - offset)
            try:
                where = self._patch(where, offset, _piece(source, offset, length), length)
                offset += length
            except RegistryUnavailable:
                tries += 1
                if tries >= UPLOAD_TRIES:
                    raise
                offset, where = self._resume(where)
        self._finish(where, digest, _piece(source, 0, 0), 0)

    def _start_upload(self) -> str:
        resp = self.http.request("POST", f"/v2/{self.repo}/blobs/uploads/", scope=self._push, ok=(202,),
                                 what=f"starting an upload to {self.where}")
        resp.close()
        return _location(resp)

    def _patch(self, where: str, offset: int, body, length: int) -> str:
        resp = self.http.request("PATCH", where, scope=self._push, content=body, ok=(202,), what="uploading a chunk",
                                 headers={"Content-Type": "application/octet-stream", "Content-Length": str(length),
                                          "Content-Range": f"{offset}-{offset + length - 1}"})
        resp.close()
        return _location(resp)

    def _resume(self, where: str) -> tuple[int, str]:
        """Where to go on after a dropped chunk: the registry's Range, or a new upload from the
        start when it has dropped the session (distribution does, if the cut chunk reached it)."""
        try:
            return self._uploaded(where)
        except (NotFoundError, RegistryError):
            return 0, self._start_upload()

    def _uploaded(self, where: str) -> tuple[int, str]:
        """How much of the upload the registry holds (its ``Range``), and where to go on."""
        resp = self.http.request("GET", where, scope=self._push, ok=(204,), what="the upload's progress")
        resp.close()
        m = re.fullmatch(r"(?:bytes=)?0-(\d+)", resp.headers.get("range", ""))
        return (int(m.group(1)) + 1 if m else 0), (_location(resp) if resp.headers.get("location") else where)

    def _finish(self, where: str, digest: str, body, length: int) -> None:
        sep = "&" if "?" in where else "?"
        resp = self.http.request("PUT", f"{where}{sep}digest={digest}", scope=self._push, content=body, ok=(201,),
                                 headers={"Content-Type": "application/octet-stream", "Content-Length": str(length)},
                                 what=f"finishing blob {digest}")
        resp.close()

    # --- tags and referrers -------------------------------------------------------------
    def tags(self, prefix: str = "") -> list[str]:
        """The repository's tags that start with ``prefix``; at most MAX_TAGS of them are kept,
        and a registry that pages on past MAX_TAG_PAGES (or loops) is refused."""
        out, path, seen = [], f"/v2/{self.repo}/tags/list?n=1000", set()
        for _ in range(MAX_TAG_PAGES):
            try:
                resp = self.http.request("GET", path, scope=self._pull, what=f"the tags of {self.where}")
            except NotFoundError:
                return out
            link = resp.headers.get("link", "")
            doc = json_object(read_capped(resp, MAX_TAG_PAGE, "a tag list"), "a tag list")
            tags = doc.get("tags") or []
            out += [t for t in tags if isinstance(t, str) and t.startswith(prefix)] if isinstance(tags, list) else []
            if len(out) > MAX_TAGS:
                raise LimitError(f"{self.where} lists more than {MAX_TAGS} tags")
            m = re.match(r"<([^>]+)>", link)
            if not m or m.group(1) in seen:
                return out
            seen.add(path := m.group(1))
        raise LimitError(f"{self.where} lists more than {MAX_TAG_PAGES} pages of tags")

    def referrers(self, digest: str) -> list[dict]:
        """Descriptors of the manifests whose subject is ``digest`` (API, else the tag fallback)."""
        try:
            resp = self.http.request("GET", f"/v2/{self.repo}/referrers/{digest}", scope=self._pull,
                                     what=f"the referrers of {digest}")
        except NotFoundError:
            return artifact.index_manifests(self._fallback(digest)[0])
        doc = json_object(read_capped(resp, artifact.MAX_MANIFEST, "a referrers index"), "a referrers index")
        return artifact.index_manifests(doc)

    def add_referrer(self, subject: str, descriptor: dict) -> None:
        """Where the registry has no Referrers API: list ``descriptor`` in the ``sha256-<hex>`` index."""
        if getattr(self, "_subject_api", False):
            return
        doc, current = self._fallback(subject)
        doc = artifact.with_manifest(doc, descriptor)
        raw = artifact.encode(doc)
        self.put_manifest(raw, artifact.INDEX, artifact.fallback_tag(subject), if_match=current)

    def _fallback(self, subject: str) -> tuple[dict, str | None]:
        try:
            raw, _, digest = self.get_manifest(artifact.fallback_tag(subject))
        except NotFoundError:
            return artifact.empty_index(), None
        doc = json_object(raw, "a referrers tag index")
        if doc.get("mediaType") != artifact.INDEX:
            raise FormatError(f"{self.where}:{artifact.fallback_tag(subject)} is not an image index")
        return doc, digest


def _piece(source: BinaryIO, offset: int, length: int):
    """A request body: ``length`` bytes of ``source`` from ``offset``, read a MiB at a time each
    time it is sent (so a request sent again after a 401 sends it again)."""
    def body():
        source.seek(offset)
        left = length
        while left:
            data = source.read(min(left, 1 << 20))
            if not data:
                raise DigestError("the file being uploaded shrank while it was read")
            left -= len(data)
            yield data
    return body


def _location(resp: httpx.Response) -> str:
    where = resp.headers.get("location")
    if not where:
        raise RegistryError("the registry started an upload without a Location")
    return str(resp.request.url.join(where))
