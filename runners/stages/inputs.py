"""Stage 1, inputs: the spec's files opened, the base model loaded, the feeds
read, and the route's production adapter (the parent) found and attached."""

from __future__ import annotations

import platform
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import tgsp
from tgsp import clock
from tgsp.errors import InputError, PackageError

from ..data import feeds as feeds_mod
from ..data.feeds import Feed
from ..learn import adapters, model as model_mod
from ..privacy import modes
from ..spec import RunSpec, load_spec, resolve
from ..state import keys as state_keys
from ..state.registry import Registry


@dataclass(frozen=True)
class Opened:
    """A spec with its roots applied: where inputs are read and outputs go."""

    spec: RunSpec
    base: Path
    out_base: Path
    digest: str

    @property
    def out_path(self) -> Path:
        return resolve(self.out_base, self.spec.output.path)

    @property
    def state(self) -> Path:
        """The route's state folder. A relative ``state_dir`` must stay inside the output
        base: under --output-root, one that climbs out would put the DP ledger on a
        container's ephemeral disk."""
        spec = self.spec
        if spec.output.state_dir:
            where = resolve(self.out_base, spec.output.state_dir)
            if not Path(spec.output.state_dir).is_absolute() and not where.is_relative_to(self.out_base):
                raise InputError(f"output.state_dir {spec.output.state_dir!r} leaves the output folder {self.out_base}",
                                 hint="give a folder inside the output folder, or an absolute path on durable storage")
            return where
        return self.out_path.parent / ".tgflow-state" / spec.route_key

    @property
    def registry_location(self) -> Path | str:
        """The registry folder, or an ``oci://`` reference given as output.registry."""
        if (self.spec.output.registry or "").startswith("oci://"):
            return self.spec.output.registry
        return self.registry_dir

    @property
    def registry_dir(self) -> Path:
        if self.spec.output.registry:
            return resolve(self.out_base, self.spec.output.registry)
        return self.out_path.parent / "registry"


def open_round(spec_path: str | Path, input_root: Path | None, output_root: Path | None,
               now: clock.Clock = clock.utcnow) -> Opened:
    spec, base, digest = load_spec(spec_path)
    fed = spec.federation
    if fed is not None and "{date}" in fed.round:  # a scheduled federated round: today's, in UTC
        fed = fed.model_copy(update={"round": fed.round.replace("{date}", now().strftime("%Y-%m-%d"))})
        spec = spec.model_copy(update={"federation": fed})
    out_base = base
    if input_root is not None:
        base = Path(input_root).resolve()
    if output_root is not None:
        out_base = Path(output_root).resolve()
        spec = spec.model_copy(update={"output": spec.output.model_copy(update={"path": Path(spec.output.path).name})})
    return Opened(spec, base, out_base, digest)


@dataclass
class Inputs:
    tok: Any
    model: Any  # the base model; a PeftModel with adapter "parent" when the route has a production adapter
    device: model_mod.Device
    model_files: dict[str, str]
    model_id: str
    feed: Feed
    reference: Feed
    eval_feed: Feed | None
    parent: adapters.Release | None


def environment(device: model_mod.Device) -> dict[str, Any]:
    import peft
    import torch
    import transformers

    env = {"python": platform.python_version(), "platform": platform.platform(), "torch": torch.__version__,
           "transformers": transformers.__version__, "peft": peft.__version__, "tgflow": tgsp.builder.TOOL,
           "device": device.name, "dtype": device.dtype_name, "cpu_threads": torch.get_num_threads()}
    if device.name == "cuda":
        env["gpu"] = torch.cuda.get_device_name(0)
    return env


def chat_of(tok) -> Callable | None:
    return (lambda msgs: tok.apply_chat_template(msgs, tokenize=False)) if getattr(tok, "chat_template", None) else None


def production(registry: Registry, route: str) -> tuple[dict[str, Any], Path] | None:
    """The registry entry the route's ``production`` alias names, and its file (None if none).
    Read as the registry's own editor (``fresh=False``): an index nobody re-signed for a while
    still says what production is, and this round's registration re-signs it."""
    doc, _ = registry.load(route, fresh=False)
    target = (doc or {}).get("aliases", {}).get("production")
    if target is None:
        return None
    entry = next(e for e in doc["packages"] if e["package_id"] == target["package_id"])
    return entry, registry.package_path(route, entry)


def by_id(registry: Registry, route: str, package_id: str) -> tuple[dict[str, Any], Path]:
    """The registry entry of ``package_id`` (a federated round's named start), and its file."""
    doc, _ = registry.load(route, fresh=False)
    entry = next((e for e in (doc or {}).get("packages", []) if e["package_id"] == package_id), None)
    if entry is None:
        raise InputError(f"federation.start names {package_id[:23]}, which is not in route {route}'s registry "
                         f"{registry.root}", hint="sync the registry from the aggregator, or fix federation.start")
    return entry, registry.package_path(route, entry)


def find_parent(rnd, model_id: str) -> adapters.Release | None:
    """The route's production adapter (or the federated round's named start), decrypted in
    memory with one of the spec's recipients."""
    return parent_of(rnd.spec, rnd.registry, rnd.keyring, rnd.passphrase, model_id)


def parent_of(spec: RunSpec, registry: Registry, keyring, passphrase, model_id: str) -> adapters.Release | None:
    fed = spec.federation
    named = fed.start if fed is not None else None
    found = by_id(registry, spec.route_key, named) if named else production(registry, spec.route_key)
    if found is None:
        return None
    entry, path = found
    idents = state_keys.identities_for(keyring, spec.output.recipients, passphrase)
    if not idents:
        raise InputError(f"route {spec.route_key}'s production adapter (version {entry['version']}) is encrypted, "
                         "and this keyring holds none of output.recipients' private keys to open it",
                         hint="add a recipient whose key is in this keyring (warm start, novelty and the "
                              "champion/challenger gate read the production adapter)")
    policy = keyring.trust_policy(route=spec.route_key, kind="adapter")
    try:
        release = adapters.read_release(path, policy, idents)
    except PackageError as exc:
        raise PackageError(f"route {spec.route_key}'s production adapter (version {entry['version']}) fails "
                        f"verification: {exc}", hint="promote a version that verifies (tgflow route promote), "
                        "or roll back (tgflow route rollback)") from None
    if release.base_model.get("sha256") != model_id:
        raise InputError(f"route {spec.route_key}'s production adapter (version {release.version}) was trained on "
                         "another base model", hint="use its base model, or start a new route")
    return release


@dataclass
class Prepared:
    """What a round reads before it takes the route's lock: a bad model path, feed or
    row fails here and leaves no trace (no state folder, no lock file)."""

    model_path: Path
    model_files: dict[str, str]
    model_id: str
    tok: Any
    feed: Feed
    reference: Feed
    eval_feed: Feed | None


def prepare(opened: Opened, keyring) -> Prepared:
    spec = opened.spec
    model_path = model_mod.resolve_model(spec.base_model_ref, opened.base)
    model_files = model_mod.model_digest(model_path)
    model_id = tgsp.canonical.sha256_hex(tgsp.canonical.encode(model_files))
    tok = model_mod.load_tokenizer(model_path)
    return Prepared(model_path, model_files, model_id, tok, *read_feeds(opened, keyring, tok, ("feed", "reference", "eval")))


def read_feeds(opened: Opened, keyring, tok, names: tuple[str, ...]) -> tuple[Feed | None, ...]:
    """The spec's feeds of these names (None for an absent eval feed), rendered with ``tok``'s chat template."""
    spec = opened.spec
    return tuple(None if getattr(spec, n) is None else
                 feeds_mod.load_feed(getattr(spec, n), opened.base, chat_template=chat_of(tok), keyring=keyring)
                 for n in names)


def gather(rnd, p: Prepared) -> Inputs:
    """Under the lock: the route's production adapter, then the base model with it attached."""
    inputs = load_inputs(rnd.spec, p, find_parent(rnd, p.model_id), rnd.stage)
    _record(rnd, inputs)
    return inputs


def load_inputs(spec: RunSpec, p: Prepared, parent: adapters.Release | None, stage) -> Inputs:
    """The base model on the spec's device, with ``parent`` attached when there is one."""
    device = model_mod.pick_device(spec.training.precision)
    with stage("loading the base model"):
        tok, model = model_mod.load(p.model_path, device, tok=p.tok)
    if parent is not None:
        model = adapters.attach(model, parent, "parent")
    return Inputs(tok, model, device, p.model_files, p.model_id, p.feed, p.reference, p.eval_feed, parent)


def _record(rnd, i: Inputs) -> None:
    spec = rnd.spec
    rnd.record("tgflow.round.start", {"route": spec.route_key, "spec_sha256": rnd.opened.digest,
                                      "spec": spec.model_dump(mode="json"), "environment": environment(i.device)})
    rnd.record("tgflow.inputs", {
        "base_model": {"ref": spec.base_model_ref, "sha256": i.model_id, "files": i.model_files},
        "parent": None if i.parent is None else {"package_id": i.parent.package_id, "version": i.parent.version,
                                                 "alias": "production", "init": spec.training.init},
        "feed": None if i.feed is None else {"source": i.feed.source, "sha256": rnd.mode.private(i.feed.digest),
                                             "examples": len(i.feed.examples), "tgsp_package": i.feed.package_id},
        "reference": {"source": i.reference.source, "sha256": i.reference.digest,
                      "examples": len(i.reference.examples)},
        "eval": None if i.eval_feed is None else {"source": i.eval_feed.source, "sha256": i.eval_feed.digest,
                                                  "examples": len(i.eval_feed.examples)}})


def check_round(spec: RunSpec, keyring) -> None:
    """What a site's or local round refuses before the route's lock, leaving no trace; `peft
    validate` runs the same function, so a spec it passes is not refused here."""
    modes.check(spec)
    if spec.feed is None:
        raise InputError("run spec field feed: peft run needs a training feed (only fed aggregate runs without one)")
    if spec.federation is not None:
        keyring.resolve_public(spec.federation.aggregator)
        modes.check_site(spec, keyring, clock.utcnow)
        if spec.federation.start and spec.training.init == "base":
            raise InputError("federation.start names a starting adapter, but training.init is \"base\"",
                             hint="drop one of them")


def check_recipients(spec: RunSpec, keyring) -> None:
    """Each output recipient is a recipient key (a signing key here failed only at packaging)."""
    for r in spec.output.recipients:
        if keyring.resolve_public(r).kind != "recipient":
            raise InputError(f"output.recipients {r!r} is not a recipient key",
                             hint="name recipient keys (tgflow key list shows each key's type)")
