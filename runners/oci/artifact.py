"""tgflow's OCI artifacts: media types, the package manifest, and the checks on one pulled.

A package is an OCI 1.1 image manifest with ``artifactType`` ``application/vnd.tgflow.package.v1``,
the empty config, and exactly one layer, the package file itself, so the layer digest is the
file's SHA-256. Its evidence and a route index naming it are referrers (``subject``). See
docs/format.md §15."""

from __future__ import annotations

import base64

from tgsp.canonical import encode as jcs
from tgsp.errors import FormatError

from .refs import DIGEST

MANIFEST = "application/vnd.oci.image.manifest.v1+json"
INDEX = "application/vnd.oci.image.index.v1+json"
ACCEPT = f"{MANIFEST}, {INDEX}"
EMPTY = "application/vnd.oci.empty.v1+json"
EMPTY_DIGEST = "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a"
PACKAGE = "application/vnd.tgflow.package.v1"
PACKAGE_LAYER = "application/vnd.tgflow.package.layer.v1.tgsp"
EVIDENCE = "application/vnd.tgflow.evidence.v1+jsonl"
ROUTE_INDEX = "application/vnd.tgflow.route-index.v1+json"
LAYERS = {PACKAGE: PACKAGE_LAYER, EVIDENCE: EVIDENCE, ROUTE_INDEX: ROUTE_INDEX}
MAX_MANIFEST = 4 << 20  # distribution's own limit for a manifest
MAX_REFERRERS = 1000
ANN = "org.opencontainers.image"
TITLE, CREATED, REF_NAME = f"{ANN}.title", f"{ANN}.created", f"{ANN}.ref.name"
T = "io.tgflow"


def encode(doc: dict) -> bytes:
    """Manifests are written in canonical JSON: one byte string, so one digest, per content."""
    return jcs(doc)


def empty_config() -> dict:
    return {"mediaType": EMPTY, "digest": EMPTY_DIGEST, "size": 2, "data": base64.b64encode(b"{}").decode()}


def descriptor(media_type: str, digest: str, size: int, annotations: dict | None = None,
               artifact_type: str | None = None) -> dict:
    d = {"mediaType": media_type, "digest": digest, "size": size}
    if artifact_type:
        d["artifactType"] = artifact_type
    if annotations:
        d["annotations"] = annotations
    return d


def manifest(artifact_type: str, layer: dict, annotations: dict[str, str], subject: dict | None = None) -> bytes:
    doc = {"schemaVersion": 2, "mediaType": MANIFEST, "artifactType": artifact_type, "config": empty_config(),
           "layers": [layer], "annotations": annotations}
    if subject:
        doc["subject"] = {k: subject[k] for k in ("mediaType", "digest", "size")}
    return encode(doc)


def package_annotations(m: dict, package_id: str, name: str, created: str) -> dict[str, str]:
    """What a registry UI shows: route, version, kind, package id; nothing secret (the manifest is public)."""
    out = {f"{T}.package-id": package_id, f"{T}.kind": str(m.get("kind", "")), TITLE: name, CREATED: created}
    if m.get("route"):
        out[f"{T}.route"] = str(m["route"])
    if m.get("version") is not None:
        out[f"{T}.version"] = str(m["version"])
    return out


def check(doc: dict, artifact_type: str, where: str) -> dict:
    """The one layer of a tgflow artifact manifest of ``artifact_type``; FormatError naming what is off."""
    if doc.get("schemaVersion") != 2 or doc.get("mediaType") != MANIFEST:
        raise FormatError(f"{where} is not an OCI image manifest (mediaType {str(doc.get('mediaType'))[:80]!r})")
    if doc.get("artifactType") != artifact_type:
        raise FormatError(f"{where} is a {str(doc.get('artifactType'))[:80]!r} artifact, not {artifact_type}")
    layers = doc.get("layers")
    if not isinstance(layers, list) or len(layers) != 1:
        raise FormatError(f"{where} must have exactly one layer (it has "
                          f"{len(layers) if isinstance(layers, list) else 'no list of'} layers)")
    layer = layers[0]
    check_descriptor(layer, where)
    if layer["mediaType"] != LAYERS[artifact_type]:
        raise FormatError(f"{where}'s layer is {layer['mediaType'][:80]!r}, not {LAYERS[artifact_type]}")
    return layer


def check_descriptor(d, where: str) -> None:
    if not isinstance(d, dict) or not isinstance(d.get("mediaType"), str) or not isinstance(d.get("digest"), str):
        raise FormatError(f"{where} has a malformed descriptor")
    size = d.get("size")
    if not DIGEST.match(d["digest"]) or isinstance(size, bool) or not isinstance(size, int) or size < 0:
        raise FormatError(f"{where} has a descriptor without a sha256 digest and a size")


def referrer(d: dict, doc: dict) -> dict:
    """The descriptor a referrers list gives for manifest ``doc`` (at ``d``): only well-typed fields."""
    ann, kind = doc.get("annotations"), doc.get("artifactType")
    ann = ann if isinstance(ann, dict) and all(isinstance(k, str) and isinstance(v, str) for k, v in ann.items()) \
        else None
    return descriptor(d["mediaType"], d["digest"], d["size"], ann, kind if isinstance(kind, str) else None)


def kind_of(doc: dict) -> str | None:
    """A manifest's artifactType if it is one of tgflow's, else None."""
    kind = doc.get("artifactType")
    return kind if isinstance(kind, str) and kind in LAYERS else None


def subject_of(doc: dict) -> str | None:
    subject = doc.get("subject")
    return subject.get("digest") if isinstance(subject, dict) and isinstance(subject.get("digest"), str) else None


def fallback_tag(digest: str) -> str:
    """The referrers tag schema of the distribution spec: ``sha256-<hex>``."""
    return digest.replace(":", "-", 1)


def empty_index() -> dict:
    return {"schemaVersion": 2, "mediaType": INDEX, "manifests": []}


def index_manifests(doc: dict) -> list[dict]:
    found = doc.get("manifests")
    if not isinstance(found, list) or len(found) > MAX_REFERRERS:
        raise FormatError(f"an image index must list at most {MAX_REFERRERS} manifests")
    for d in found:
        check_descriptor(d, "an image index")
    return found


def with_manifest(doc: dict, d: dict) -> dict:
    kept = [m for m in index_manifests(doc) if m["digest"] != d["digest"]]
    return {**doc, "manifests": kept + [d]}
