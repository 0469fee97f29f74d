"""Moving tgflow artifacts: push a package (with its evidence as a referrer), pull one that
verifies, and copy an artifact with its referrers between registries and layouts.

A pulled package is written to a temporary file beside the destination, verified under the
caller's trust policy, and only then renamed into place; a package that fails leaves nothing."""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Protocol

import tgsp
from tgsp import manifest as mf
from tgsp.atomic import private_dir
from tgsp.errors import FormatError, InputError

from . import artifact
from .client import Access, Http, json_object
from .layout import Layout
from .refs import Ref
from .registry import Repository

MAX_SIDE_BLOB = 64 << 20  # an evidence chain or a route index, never a package


class Target(Protocol):
    where: str

    def get_manifest(self, reference: str) -> tuple[bytes, str, str]: ...
    def resolve(self, reference: str) -> str | None: ...
    def put_manifest(self, raw: bytes, media_type: str, reference: str, *, if_match: str | None = None) -> str: ...
    def has_blob(self, digest: str) -> bool: ...
    def get_blob(self, digest: str, size: int, sink: Callable[[bytes], None]) -> None: ...
    def put_blob(self, digest: str, size: int, source) -> None: ...
    def tags(self) -> list[str]: ...
    def referrers(self, digest: str) -> list[dict]: ...
    def add_referrer(self, subject: str, descriptor: dict) -> None: ...


@contextlib.contextmanager
def opened(ref: Ref, access: Access, *, create: bool = False) -> Iterator[Target]:
    """The repository or layout ``ref`` names (a layout is created if ``create``)."""
    if ref.layout is not None:
        yield Layout(ref.layout, create=create)
        return
    with Http(ref.host, access) as http:
        yield Repository(http, ref.repo)


@dataclass(frozen=True)
class Pushed:
    digest: str
    layer: str
    size: int
    package_id: str
    referrers: tuple[str, ...]


def push_package(path: Path, target: Target, tag: str | None, *, evidence: bool = True) -> Pushed:
    """``path`` (a TGSP package: checked for format, not trust) as an artifact, tagged ``tag``."""
    with tgsp.open_package(path) as pkg:
        m, pid = pkg.manifest, pkg.package_id
        ev = pkg.read(mf.EVIDENCE_ENTRY) if evidence else None
    layer = _file_descriptor(path, artifact.PACKAGE_LAYER, {artifact.TITLE: _title(m, path)})
    target.put_blob(artifact.EMPTY_DIGEST, 2, io.BytesIO(b"{}"))
    with open(path, "rb") as f:
        target.put_blob(layer["digest"], layer["size"], f)
    raw = artifact.manifest(artifact.PACKAGE, layer, artifact.package_annotations(m, pid, _title(m, path), m["created"]))
    digest = target.put_manifest(raw, artifact.MANIFEST, tag or "sha256:" + hashlib.sha256(raw).hexdigest())
    subject = artifact.descriptor(artifact.MANIFEST, digest, len(raw))
    refs = (attach(target, subject, artifact.EVIDENCE, ev, {f"{artifact.T}.package-id": pid,
                                                            artifact.CREATED: m["created"]}),) if ev else ()
    return Pushed(digest, layer["digest"], layer["size"], pid, refs)


def attach(target: Target, subject: dict, artifact_type: str, data: bytes, annotations: dict[str, str]) -> str:
    """``data`` as a one-layer referrer of ``subject``; its manifest digest."""
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    target.put_blob(artifact.EMPTY_DIGEST, 2, io.BytesIO(b"{}"))
    target.put_blob(digest, len(data), io.BytesIO(data))
    layer = artifact.descriptor(artifact.LAYERS[artifact_type], digest, len(data))
    raw = artifact.manifest(artifact_type, layer, annotations, subject)
    mdigest = target.put_manifest(raw, artifact.MANIFEST, "sha256:" + hashlib.sha256(raw).hexdigest())
    target.add_referrer(subject["digest"], artifact.descriptor(artifact.MANIFEST, mdigest, len(raw), annotations,
                                                               artifact_type))
    return mdigest


def package_layer(target: Target, reference: str) -> tuple[str, dict]:
    """(manifest digest, its one package layer) of the tgflow package artifact at ``reference``."""
    digest, layer, _, _ = _package_manifest(target, reference)
    return digest, layer


def _package_manifest(target: Target, reference: str) -> tuple[str, dict, bytes, str]:
    """The package artifact's manifest, read once: (digest, its one layer, its bytes, media type)."""
    raw, media, digest = target.get_manifest(reference)
    doc = json_object(raw, f"manifest {target.where}@{digest}")
    return digest, artifact.check(doc, artifact.PACKAGE, f"{target.where}@{digest}"), raw, media


def pull_package(target: Target, reference: str, dest: Path, check: Callable[[Path], object],
                 max_bytes: int, *, overwrite: bool = True) -> tuple[str, object]:
    """Download the package at ``reference``, ``check`` it (verify; raises on failure), then
    rename it to ``dest`` (without ``overwrite``, only if nothing is there by then).
    (manifest digest, what ``check`` returned)."""
    digest, layer = package_layer(target, reference)
    return digest, _stage(target, digest, layer, dest, check, max_bytes, overwrite)


def _stage(target: Target, digest: str, layer: dict, dest: Path, check: Callable[[Path], object], max_bytes: int,
           overwrite: bool) -> object:
    if layer["size"] > max_bytes:
        raise InputError(f"{target.where}@{digest} holds a {layer['size']}-byte package, over the {max_bytes}-byte limit",
                         hint="raise TGFLOW_PULL_MAX_BYTES if you expect a package this large")
    with private_dir(dest) as tmp:
        staged = tmp / "package.tgsp"
        with open(staged, "wb") as f:
            target.get_blob(layer["digest"], layer["size"], f.write)
            f.flush()
            os.fsync(f.fileno())
        result = check(staged)
        if overwrite:
            os.replace(staged, dest)
        else:
            try:
                os.link(staged, dest)  # fails if something appeared at dest meanwhile
            except FileExistsError:
                raise InputError(f"{dest} already exists", hint="pass --force to replace it") from None
            os.unlink(staged)
        tmp.rmdir()
    return result


def copy(src: Target, dst: Target, reference: str, tag: str | None, check: Callable[[Path], object],
         max_bytes: int) -> tuple[str, list[str]]:
    """Copy the package artifact at ``reference`` (checked first) and its referrers; (digest, referrer digests)."""
    digest, layer, raw, media = _package_manifest(src, reference)
    with tempfile.TemporaryDirectory(prefix="tgflow-copy-") as tmp:  # the package is encrypted
        _stage(src, digest, layer, Path(tmp) / "package.tgsp", check, max_bytes, True)
        dst.put_blob(artifact.EMPTY_DIGEST, 2, io.BytesIO(b"{}"))
        with open(Path(tmp) / "package.tgsp", "rb") as f:
            dst.put_blob(layer["digest"], layer["size"], f)
    dst.put_manifest(raw, media or artifact.MANIFEST, tag or digest)
    subject = artifact.descriptor(artifact.MANIFEST, digest, len(raw))
    return digest, [copy_referrer(src, dst, d, subject) for d in src.referrers(digest)
                    if d.get("artifactType") in (artifact.EVIDENCE, artifact.ROUTE_INDEX)]


def copy_referrer(src: Target, dst: Target, d: dict, subject: dict) -> str:
    raw, media, digest = src.get_manifest(d["digest"])
    doc = json_object(raw, f"referrer {digest}")
    kind = artifact.kind_of(doc)
    layer = artifact.check(doc, kind, f"referrer {src.where}@{digest}") if kind else None
    if layer is None or artifact.subject_of(doc) != subject["digest"]:
        raise FormatError(f"{src.where}@{digest} is not a tgflow referrer of {subject['digest']}")
    if layer["size"] > MAX_SIDE_BLOB:
        raise FormatError(f"referrer {digest} has a {layer['size']}-byte layer, over {MAX_SIDE_BLOB}")
    buf = bytearray()
    src.get_blob(layer["digest"], layer["size"], buf.extend)
    dst.put_blob(artifact.EMPTY_DIGEST, 2, io.BytesIO(b"{}"))
    dst.put_blob(layer["digest"], layer["size"], io.BytesIO(bytes(buf)))
    dst.put_manifest(raw, media or artifact.MANIFEST, digest)
    dst.add_referrer(subject["digest"], artifact.referrer({"mediaType": artifact.MANIFEST, "digest": digest,
                                                           "size": len(raw)}, doc))
    return digest


def _file_descriptor(path: Path, media_type: str, annotations: dict) -> dict:
    h, size = hashlib.sha256(), 0
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
            size += len(chunk)
    return artifact.descriptor(media_type, "sha256:" + h.hexdigest(), size, annotations)


def _title(m: dict, path: Path) -> str:
    if m.get("route") and m.get("version") is not None:
        return f"{m['route']}-v{m['version']}.tgsp"
    return Path(path).name[:200]
