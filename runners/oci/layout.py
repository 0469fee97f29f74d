"""An OCI image layout folder (``oci-layout``, ``index.json``, ``blobs/sha256/``): the same
operations as a registry repository, for mirrors carried across an air gap.

Tags are ``org.opencontainers.image.ref.name`` annotations in ``index.json``; referrers are
untagged manifests listed there too (as ORAS writes them), found by their ``subject``. Blob
names come from validated digests only, links are refused, and every write is atomic, with
``index.json`` edited under a lock on the folder itself."""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
from pathlib import Path
from typing import BinaryIO, Callable, Iterator

from tgsp.atomic import atomic_file, write_bytes
from tgsp.inputfile import open_regular
from tgsp.errors import DigestError, FormatError, InputError, LimitError, NotFoundError, RegistryConflict

from . import artifact
from .client import json_object
from .refs import DIGEST

LAYOUT_FILE = {"imageLayoutVersion": "1.0.0"}
MAX_INDEX = 16 << 20
MAX_ENTRIES = 10_000
MAX_REFERRER = 64 << 10  # a referrer manifest is a few hundred bytes


class Layout:
    def __init__(self, root: Path, *, create: bool = False) -> None:
        self.root, self.where = Path(root), f"oci-layout:{root}"
        marker = self.root / "oci-layout"
        if create:
            refuse_non_layout(self.root)
        if not marker.exists() and create:
            self.root.mkdir(parents=True, exist_ok=True)
            write_bytes(self.root / "index.json", artifact.encode(artifact.empty_index()))
            write_bytes(marker, artifact.encode(LAYOUT_FILE))
        if self.root.is_symlink() or not self.root.is_dir():
            raise NotFoundError(f"{self.root} is not an OCI image layout folder",
                                hint="give the folder that holds oci-layout and index.json")
        doc = json_object(self._read(marker, 4096, "oci-layout"), f"{marker}")
        if doc.get("imageLayoutVersion") != "1.0.0":
            raise FormatError(f"{marker} is not an image layout of version 1.0.0")
        for sub in (self.root / "blobs", self.root / "blobs" / "sha256"):  # blob paths must stay inside
            if sub.is_symlink() or (sub.exists() and not sub.is_dir()):
                raise FormatError(f"{self.where}: {sub.relative_to(self.root)} is a link or not a folder; refused")

    # --- files --------------------------------------------------------------------------
    def _read(self, path: Path, limit: int, what: str) -> bytes:
        with open_regular(path, f"{self.where}: {what}", error=FormatError) as f:
            data = f.read(limit + 1)
        if len(data) > limit:
            raise FormatError(f"{self.where}: {what} is over {limit} bytes")
        return data

    def blob_path(self, digest: str) -> Path:
        if not DIGEST.match(digest):
            raise FormatError(f"{digest[:80]!r} is not a sha256 digest")
        return self.root / "blobs" / "sha256" / digest[7:]

    def index(self) -> dict:
        doc = json_object(self._read(self.root / "index.json", MAX_INDEX, "index.json"), f"{self.where} index.json")
        found = doc.get("manifests", [])
        if doc.get("schemaVersion") != 2 or not isinstance(found, list):
            raise FormatError(f"{self.where}: index.json is not an OCI image index")
        if len(found) > MAX_ENTRIES:
            raise LimitError(f"{self.where}: index.json lists more than {MAX_ENTRIES} manifests")
        for d in found:
            artifact.check_descriptor(d, f"{self.where} index.json")
            ann = d.get("annotations", {})
            if not isinstance(ann, dict) or not all(isinstance(v, str) for v in ann.values()):
                raise FormatError(f"{self.where}: index.json has annotations that are not strings")
        return doc

    @contextlib.contextmanager
    def _editing(self) -> Iterator[dict]:
        fd = os.open(self.root, os.O_RDONLY | os.O_DIRECTORY)  # the folder itself is the lock: no extra file
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            doc = self.index()
            yield doc
            write_bytes(self.root / "index.json", artifact.encode(doc))
        finally:
            os.close(fd)

    # --- manifests ----------------------------------------------------------------------
    def get_manifest(self, reference: str) -> tuple[bytes, str, str]:
        digest = reference if DIGEST.match(reference) else self.resolve(reference)
        if digest is None:
            raise NotFoundError(f"{self.where} has no tag {reference!r}")
        raw = self._read(self.blob_path(digest), artifact.MAX_MANIFEST, f"manifest {digest}")
        if "sha256:" + hashlib.sha256(raw).hexdigest() != digest:
            raise DigestError(f"{self.where}: blob {digest} does not hash to its name")
        media = json_object(raw, f"manifest {digest}").get("mediaType", "")
        return raw, media if isinstance(media, str) else "", digest

    def resolve(self, reference: str) -> str | None:
        if DIGEST.match(reference):
            return reference if self.blob_path(reference).is_file() else None
        found = [m["digest"] for m in self.index()["manifests"]
                 if (m.get("annotations") or {}).get(artifact.REF_NAME) == reference]
        return found[-1] if found else None

    def put_manifest(self, raw: bytes, media_type: str, reference: str, *, if_match: str | None = None) -> str:
        digest = "sha256:" + hashlib.sha256(raw).hexdigest()
        self._put(digest, raw)
        tag = None if DIGEST.match(reference) else reference
        with self._editing() as doc:
            current = next((m["digest"] for m in reversed(doc["manifests"])
                            if (m.get("annotations") or {}).get(artifact.REF_NAME) == tag), None) if tag else None
            if if_match is not None and current != if_match:
                raise RegistryConflict(f"{self.where}: tag {tag} moved meanwhile")
            keep = [m for m in doc["manifests"] if not (tag and (m.get("annotations") or {}).get(artifact.REF_NAME) == tag)
                    and not (not tag and m["digest"] == digest and not m.get("annotations"))]
            d = artifact.descriptor(media_type, digest, len(raw), {artifact.REF_NAME: tag} if tag else None)
            doc["manifests"] = keep + [d]
        return digest

    # --- blobs --------------------------------------------------------------------------
    def has_blob(self, digest: str) -> bool:
        return self.blob_path(digest).is_file()

    def get_blob(self, digest: str, size: int, sink: Callable[[bytes], None]) -> None:
        h, got = hashlib.sha256(), 0
        with open_regular(self.blob_path(digest), f"{self.where}: blob", error=FormatError) as f:
            while chunk := f.read(1 << 20):
                got += len(chunk)
                if got > size:
                    raise DigestError(f"{self.where}: blob {digest} is larger than the {size} bytes its manifest says")
                h.update(chunk)
                sink(chunk)
        if got != size or "sha256:" + h.hexdigest() != digest:
            raise DigestError(f"{self.where}: blob {digest} is {got} bytes with digest sha256:{h.hexdigest()}")

    def _holds(self, digest: str, size: int) -> bool:
        """The blob is there and is what its name says (one that is not is written again)."""
        if not self.has_blob(digest):
            return False
        try:
            self.get_blob(digest, size, lambda chunk: None)
        except (DigestError, FormatError):
            return False
        return True

    def put_blob(self, digest: str, size: int, source: BinaryIO) -> None:
        if self._holds(digest, size):
            return
        h = hashlib.sha256()
        source.seek(0)
        with atomic_file(self.blob_path(digest)) as out:
            left = size
            while left and (chunk := source.read(min(left, 1 << 20))):
                h.update(chunk)
                out.write(chunk)
                left -= len(chunk)
            if left or "sha256:" + h.hexdigest() != digest:
                raise DigestError(f"the blob written to {self.where} is not {size} bytes of {digest}")

    def _put(self, digest: str, raw: bytes) -> None:
        if not self._holds(digest, len(raw)):
            write_bytes(self.blob_path(digest), raw)

    # --- tags and referrers -------------------------------------------------------------
    def tags(self) -> list[str]:
        return sorted({t for m in self.index()["manifests"] if isinstance(t := (m.get("annotations") or {})
                                                                           .get(artifact.REF_NAME), str)})

    def referrers(self, digest: str) -> list[dict]:
        """The untagged manifests listed in index.json whose subject is ``digest`` (each small
        manifest read once; more than MAX_REFERRERS of them is refused)."""
        out, read = [], set()
        for d in self.index()["manifests"]:
            if d.get("mediaType") != artifact.MANIFEST or (d.get("annotations") or {}).get(artifact.REF_NAME) \
                    or d["size"] > MAX_REFERRER or d["digest"] in read or not self.has_blob(d["digest"]):
                continue
            read.add(d["digest"])
            doc = json_object(self.get_manifest(d["digest"])[0], f"manifest {d['digest']}")
            subject = doc.get("subject")
            if isinstance(subject, dict) and subject.get("digest") == digest:
                out.append(artifact.referrer(d, doc))
                if len(out) > artifact.MAX_REFERRERS:
                    raise LimitError(f"{self.where} lists more than {artifact.MAX_REFERRERS} referrers of {digest}")
        return out

    def add_referrer(self, subject: str, descriptor: dict) -> None:
        """Nothing to do: a referrer pushed by digest is already listed in index.json."""


def is_layout(path: Path) -> bool:
    return (Path(path) / "oci-layout").is_file()


def refuse_non_layout(path: Path) -> None:
    if path.exists() and not is_layout(path) and any(path.iterdir()):
        raise InputError(f"{path} is a folder that is not an OCI image layout", hint="give an empty or new folder")
