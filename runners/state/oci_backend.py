"""A route registry in an OCI registry repository (``--registry oci://HOST/REPO``).

    index-<route>     tag: the signed route index, one layer (artifactType route-index)
    pkg-<hex>         tag: each registered package (artifactType package), by its file's digest;
                      the index names it by that digest, never by a tag alone

Registries have no lock, so an edit is a compare-and-swap on the index tag: the new version
is written only if the tag still names the manifest the edit started from (``If-Match`` where
the registry honours conditional requests), then read back, at once and after a settle (1 s,
or four times what the check and the PUT took; TGFLOW_REGISTRY_SETTLE raises it), and it must
still be there or be the base of what is there. Otherwise the edit
is redone on top of the newer index (``Registry`` retries). Editors on one host also share a
flock. Downloaded packages are cached by digest (encrypted, as they are in the registry)."""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import time
from pathlib import Path
from typing import Any, Iterator

from runners.oci import artifact, transfer
from runners.oci.client import Access, Http, json_object
from runners.oci.refs import Ref
from runners.oci.registry import Repository
from tgsp import dsse, route_index
from tgsp.atomic import atomic_file
from tgsp.canonical import parse
from tgsp.errors import DigestError, FormatError, LimitError, NotFoundError, RegistryConflict

from .backends import LOCK_WAIT, cache_dir, check_route
from .locks import locked

SETTLE = 1.0  # at least this many seconds between writing the index tag and the last read-back


class OciBackend:
    def __init__(self, ref: Ref, access: Access, cache: Path | None = None) -> None:
        self.ref = ref
        host = ref.host.lower().removesuffix(":443")  # one registry, one name (for pins and messages)
        self.where = f"oci://{host}/{ref.repo}"
        self.repo = Repository(Http(ref.host, access), ref.repo)
        self.cache = cache or cache_dir()
        raw = os.environ.get("TGFLOW_REGISTRY_SETTLE", "")
        self.settle = float(raw) if _number(raw) else SETTLE

    # --- the index ------------------------------------------------------------------------
    def routes(self) -> list[str]:
        return sorted(t[6:] for t in self.repo.tags(prefix="index-") if route_index.ROUTE.match(t[6:]))

    def read_index(self, route: str) -> tuple[bytes | None, str | None]:
        check_route(route)
        try:
            raw, _, digest = self.repo.get_manifest(f"index-{route}")
        except NotFoundError:
            return None, None
        layer = artifact.check(json_object(raw, "a route index manifest"), artifact.ROUTE_INDEX,
                               f"{self.where}:index-{route}")
        if layer["size"] > route_index.MAX_BYTES:
            raise LimitError(f"{self.where}:index-{route} holds a {layer['size']}-byte index, over {route_index.MAX_BYTES}")
        buf = bytearray()
        self.repo.get_blob(layer["digest"], layer["size"], buf.extend)
        return bytes(buf), digest

    def write_index(self, route: str, raw: bytes, token: str | None) -> None:
        tag = f"index-{route}"
        layer_digest = "sha256:" + hashlib.sha256(raw).hexdigest()
        self.repo.put_blob(artifact.EMPTY_DIGEST, 2, io.BytesIO(b"{}"))
        self.repo.put_blob(layer_digest, len(raw), io.BytesIO(raw))
        layer = artifact.descriptor(artifact.ROUTE_INDEX, layer_digest, len(raw))
        manifest = artifact.manifest(artifact.ROUTE_INDEX, layer, {f"{artifact.T}.route": route})
        started = time.monotonic()
        if self.repo.resolve(tag) != token:
            raise RegistryConflict(f"{self.where}:{tag} moved while the index was edited")
        mine = self.repo.put_manifest(manifest, artifact.MANIFEST, tag, if_match=token)
        # A competing write that passed its own check before ours landed lands within about the
        # time a check and a PUT take: wait several times that before the last read-back.
        for wait in (0.0, max(self.settle, 4 * (time.monotonic() - started))):
            time.sleep(wait)
            self._confirm(route, mine, raw)

    def _confirm(self, route: str, mine: str, raw: bytes) -> None:
        """Ours is still the tag's, or the base of what is there now; else RegistryConflict."""
        now, current_token = self.read_index(route)
        if current_token == mine:
            return
        ours, theirs = _payload(raw), _payload(now) if now else None
        if theirs and theirs["version"] > ours["version"] and theirs["history"][:len(ours["history"])] == ours["history"] \
                and {e["package_id"] for e in ours["packages"]} <= {e["package_id"] for e in theirs["packages"]}:
            return
        raise RegistryConflict(f"{self.where}:index-{route} was replaced by another editor's version")

    @contextlib.contextmanager
    def editing(self, route: str, command: str) -> Iterator[None]:
        check_route(route)
        key = hashlib.sha256(f"{self.where}/{route}".encode()).hexdigest()[:24]
        with locked(self.cache / "locks" / key, f"registry route {route}", command, wait=LOCK_WAIT):
            yield

    # --- packages -------------------------------------------------------------------------
    def store(self, route: str, package: Path, package_id: str) -> tuple[str, int]:
        pushed = transfer.push_package(package, self.repo, f"pkg-{package_id[7:]}")
        return pushed.layer[7:], pushed.size

    def package_path(self, route: str, entry: dict[str, Any]) -> Path:
        """The package the entry names, downloaded once into the cache; its digest is the entry's."""
        path = self.cache / "packages" / f"{entry['sha256']}.tgsp"
        if path.is_file() and path.stat().st_size == entry["size"]:
            return path
        _, layer = transfer.package_layer(self.repo, f"pkg-{entry['package_id'][7:]}")
        if layer["digest"] != "sha256:" + entry["sha256"] or layer["size"] != entry["size"]:
            raise DigestError(f"{self.where}:pkg-{entry['package_id'][7:19]} is not the package the route index names "
                              f"(its layer is {layer['digest'][:19]}, the index says sha256:{entry['sha256'][:12]})")
        with atomic_file(path) as out:
            self.repo.get_blob(layer["digest"], layer["size"], out.write)
        return path

    def discard(self, route: str, package_id: str) -> None:
        """A registry keeps what was pushed; an unlisted artifact names nothing for consumers."""

    def registered(self, route: str, entry: dict[str, Any], raw_index: bytes) -> None:
        """The index version that lists the package, attached to it as a referrer."""
        raw, _, digest = self.repo.get_manifest(f"pkg-{entry['package_id'][7:]}")
        subject = artifact.descriptor(artifact.MANIFEST, digest, len(raw))
        version = str(_payload(raw_index)["version"])
        transfer.attach(self.repo, subject, artifact.ROUTE_INDEX, raw_index,
                        {f"{artifact.T}.route": route, f"{artifact.T}.index-version": version})


def _number(text: str) -> bool:
    try:
        return 0 <= float(text) <= 600
    except ValueError:
        return False


def _payload(raw: bytes) -> dict[str, Any]:
    """The index document inside a DSSE envelope, unverified: only to compare two versions' shapes."""
    try:
        doc = parse(dsse.parse(parse(raw, what="route index"), expect_type=route_index.INDEX_TYPE).payload,
                    what="route index payload")
        route_index.check_document(doc)
    except FormatError:
        raise FormatError("the registry holds a route index that is not well formed") from None
    return doc
