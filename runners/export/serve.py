"""Kubernetes: serve a route's production adapter with vLLM, fed by tgflow (``export --serve vllm``).

A Deployment and a Service. Each pod has three containers around one memory-backed emptyDir
at /adapters, so decrypted weights never touch a node disk:

- ``materialize`` (init): ``tgflow route materialize`` writes /adapters/<route>-v<version>/
  and the link /adapters/<route>, before vLLM starts;
- ``vllm``: serves the base model with the adapter as LoRA module <route>;
- ``follow``: the same command with ``--watch 60``, which writes each newly promoted (or
  rolled back) version and loads it into vLLM through its runtime LoRA endpoint.

The tgflow containers mount the keyring and passphrase Secrets exactly as the k8s Job does
(the same volumes, from k8s.py), and every container runs as in the Job: non-root, read-only
root filesystem, no privilege escalation, no capabilities.
"""

from __future__ import annotations

import posixpath
import re
from dataclasses import dataclass, replace
from pathlib import PurePosixPath
from typing import Any

from tgsp.errors import InputError
from tgsp.keyring_trust import check_name

from ..spec import RunSpec
from . import k8s, values
from .jobspec import ExportOptions, base_env, check_paths, dns1123

ENGINES = ("vllm",)
DEFAULT_IMAGE = "vllm/vllm-openai:v0.11.0"
DEPLOYMENT, SERVICE = "deployment.yaml", "service.yaml"
PORT = 8000
ADAPTERS = "/adapters"
WATCH_SECONDS = 60
SETTINGS = frozenset({"adapters_size", "identity", "keyring_secret", "namespace", "passphrase_secret",
                      "registry_secret", "state_claim", "work_claim"})
# vLLM's --max-lora-rank takes one of these (vllm/config/lora.py, MaxLoRARanks).
LORA_RANKS = (8, 16, 32, 64, 128, 256, 320, 512)
ON_CHANGE = ('curl -fsS -X POST http://127.0.0.1:8000/v1/load_lora_adapter -H "Content-Type: application/json" '
             '-d "{\\"lora_name\\": \\"$TGFLOW_ADAPTER_NAME\\", \\"lora_path\\": \\"$TGFLOW_ADAPTER_PATH\\"}"')
# The init container's shim: `tgflow route materialize` exits 20 when the folder is already
# there (a pod whose sandbox restarts keeps its emptyDir and runs its init containers again),
# which is success here; any other code fails the pod start. The args stay the tgflow argv.
INIT_SHIM = 'tgflow "$@"; rc=$?; if [ "$rc" -eq 20 ]; then exit 0; fi; exit "$rc"'
_DNS1035 = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")  # a Service name starts with a letter
_TGFLOW_MOUNTS = ("keyring-keys", "keyring-trust", "keyring-revocations", "passphrase")


@dataclass(frozen=True)
class Serving:
    """``--serve ENGINE [--serve-image IMAGE] [--registry oci://HOST/REPO]``."""

    engine: str = "vllm"
    image: str = DEFAULT_IMAGE
    registry: str | None = None  # default: the spec's output registry, on the state claim


def refuse_backend(backend: str, serving: Serving) -> None:
    if serving.engine not in ENGINES:
        raise InputError(f"--serve {serving.engine!r} is not one of {', '.join(ENGINES)}")
    if backend != "k8s":
        raise InputError(f"--serve {serving.engine} exports a Kubernetes Deployment: use it with --backend k8s, "
                         f"not --backend {backend}")


def _refuse_job_options(options: ExportOptions) -> None:
    for given, flag in ((options.schedule, "--schedule"), (options.aggregate, "--aggregate"),
                        (options.distributed, "--nodes/--procs-per-node")):
        if given:
            raise InputError(f"{flag} shapes a training job; --serve exports a Deployment that runs until deleted")


def rank(spec: RunSpec) -> int:
    """--max-lora-rank: the spec's LoRA rank, at least 8, rounded up to a value vLLM takes."""
    fits = [r for r in LORA_RANKS if r >= spec.lora.r]
    if not fits:
        raise InputError(f"run spec lora.r {spec.lora.r} is over vLLM's largest --max-lora-rank {LORA_RANKS[-1]}")
    return fits[0]


def base_model(spec: RunSpec) -> str:
    """The base model in the pod: the round's own folder on the work claim (/work), as peft run resolves it."""
    ref = PurePosixPath(spec.base_model_ref)
    return str(ref if ref.is_absolute() else PurePosixPath("/work") / ref)


def registry(spec: RunSpec, serving: Serving) -> tuple[str, bool]:
    """(the registry materialize reads, whether it lives on the state claim at /out)."""
    ref = serving.registry or spec.output.registry
    if ref is not None and ref.startswith("oci://"):
        rest = ref[len("oci://"):]
        if "/" not in rest or "@" in rest or ":" in rest.split("/", 1)[1] or not values.IMAGE.match(rest):
            raise InputError(f"registry {ref!r} is not oci://HOST[:PORT]/REPO (a repository: no :TAG or @DIGEST)")
        return ref, False
    if serving.registry is not None:
        raise InputError(f"--registry {serving.registry!r}: give an oci://HOST/REPO reference, or leave it out "
                         "to read the spec's registry from the state claim")
    # Under --output-root /out the package is /out/<name>, so the registry defaults to /out/registry.
    where = posixpath.normpath(ref if ref and ref.startswith("/") else f"/out/{ref or 'registry'}")
    if not where.startswith("/out/"):
        raise InputError(f"run spec output.registry {ref!r} is outside the output root, which the pod mounts at /out",
                         hint="give the registry as --registry oci://HOST/REPO, or keep it under the output folder")
    return where, True


def identity(spec: RunSpec, options: ExportOptions) -> str:
    """The recipient key that decrypts the adapter: --set identity, else the spec's first recipient name."""
    name = options.settings.get("identity") or next((r for r in spec.output.recipients
                                                     if "/" not in r and not r.endswith(".json")), None)
    if name is None:
        raise InputError("the run spec names its recipients by key file; say which keyring key decrypts the adapter",
                         hint="--set identity=NAME (a recipient key in the keyring Secret)")
    try:
        check_name(name)
    except InputError:
        raise InputError(f"--set identity {name!r} is not a key name", hint="1-64 of A-Z a-z 0-9 . _ -") from None
    return name


def materialize_args(route: str, reg: str, ident: str, *, follow: bool = False) -> list[str]:
    """The tgflow argv of the init container, or with ``follow`` of the sidecar."""
    args = ["route", "materialize", route, "--registry", reg, "--to", ADAPTERS, "--alias", "production",
            "--identity", ident]
    return args + ["--watch", str(WATCH_SECONDS), "--on-change", ON_CHANGE] if follow else args


def vllm_args(spec: RunSpec, gpus: int) -> list[str]:
    route = spec.route_key
    args = ["--model", base_model(spec), "--enable-lora", "--max-lora-rank", str(rank(spec)),
            # two: the version being served and the next one while the follower switches
            "--max-loras", "2", "--lora-modules", f"{route}={ADAPTERS}/{route}", "--port", str(PORT)]
    return args + (["--tensor-parallel-size", str(gpus)] if gpus > 1 else [])


def _names(spec: RunSpec, options: ExportOptions):
    """The k8s Job's names (namespace, Secrets, claims, route label), for a Deployment."""
    n = k8s._names(spec, replace(options, name=None))
    name = options.name or f"{n.job}-vllm"
    dns1123(name, what="--name")
    if not _DNS1035.match(name):
        raise InputError(f"--name {name!r} must start with a letter: it also names the Service")
    return replace(n, job=name, labels={**n.labels, "app.kubernetes.io/component": "serve"})


def _tgflow(options: ExportOptions, name: str, args: list[str], env: dict[str, str], size: str,
            on_state: bool) -> dict[str, Any]:
    """A tgflow container as the k8s Job builds it, with the mounts materialize needs."""
    c = k8s._container(replace(options, gpus=0), ["tgflow"], args, env)
    mounts = [m for m in c["volumeMounts"] if m["name"] in _TGFLOW_MOUNTS]
    mounts += [{"name": "state", "mountPath": "/out", "readOnly": True}] if on_state else []
    if "DOCKER_CONFIG" in env:
        mounts.append({"name": "registry-auth", "mountPath": "/secrets/registry", "readOnly": True})
    mounts += [{"name": "tmp", "mountPath": "/tmp"}, {"name": "adapters", "mountPath": ADAPTERS}]
    return {**c, "name": name, "volumeMounts": mounts,
            "resources": {"requests": {"cpu": "100m", "memory": "256Mi"}, "limits": {"cpu": "1", "memory": size}}}


def _vllm(spec: RunSpec, options: ExportOptions, serving: Serving, security: dict[str, Any]) -> dict[str, Any]:
    gpus = options.gpus or 1
    limits = {"cpu": options.cpu, "memory": options.memory, "nvidia.com/gpu": str(gpus)}
    env = {"VLLM_ALLOW_RUNTIME_LORA_UPDATING": "True", "HOME": "/tmp", "HF_HUB_OFFLINE": "1",
           "TRANSFORMERS_OFFLINE": "1", "VLLM_NO_USAGE_STATS": "1", "DO_NOT_TRACK": "1"}
    return {
        "name": "vllm",
        "image": serving.image,
        "imagePullPolicy": "IfNotPresent",
        "command": ["vllm", "serve"],
        "args": vllm_args(spec, gpus),
        "env": [{"name": k, "value": v} for k, v in env.items()],
        "ports": [{"name": "http", "containerPort": PORT, "protocol": "TCP"}],
        "readinessProbe": {"httpGet": {"path": "/health", "port": "http"}, "periodSeconds": 10,
                           "timeoutSeconds": 5, "failureThreshold": 3},
        "resources": {"requests": {"cpu": options.cpu, "memory": options.memory}, "limits": limits},
        "securityContext": security,
        "volumeMounts": [{"name": "work", "mountPath": "/work", "readOnly": True},
                         {"name": "adapters", "mountPath": ADAPTERS, "readOnly": True},
                         {"name": "vllm-tmp", "mountPath": "/tmp"}, {"name": "dshm", "mountPath": "/dev/shm"}],
    }


def _volumes(pod: dict[str, Any], on_state: bool, registry_secret: str | None, size: str) -> list[dict[str, Any]]:
    """The k8s Job's volumes (keyring, passphrase, claims), less its ConfigMap, plus the adapters'."""
    keep = {*_TGFLOW_MOUNTS, "work", *(("state",) if on_state else ())}
    vols = [v for v in pod["spec"]["volumes"] if v["name"] in keep]
    for v in vols:
        if v["name"] == "state":  # the registry is only read
            v["persistentVolumeClaim"] = {**v["persistentVolumeClaim"], "readOnly": True}
    if registry_secret:  # a kubernetes.io/dockerconfigjson Secret, read as $DOCKER_CONFIG/config.json
        items = [{"key": ".dockerconfigjson", "path": "config.json"}]
        vols.append({"name": "registry-auth",
                     "secret": {"secretName": registry_secret, "defaultMode": 0o400, "items": items}})
    return vols + [
        # Memory-backed: the decrypted adapter lives in RAM only. Room for the version served, the one
        # before it (kept for a rollback) and the next one while it is written.
        {"name": "adapters", "emptyDir": {"medium": "Memory", "sizeLimit": size}},
        {"name": "tmp", "emptyDir": {"medium": "Memory", "sizeLimit": "256Mi"}},
        {"name": "vllm-tmp", "emptyDir": {}},  # vLLM's compile and kernel caches
        {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": "2Gi"}},
    ]


def _settings(spec: RunSpec, options: ExportOptions, serving: Serving) -> tuple[str, bool, str, str | None, str]:
    reg, on_state = registry(spec, serving)
    secret = options.settings.get("registry_secret")
    if secret is not None:
        if on_state:
            raise InputError("--set registry_secret is for an oci:// registry; this export reads the state claim")
        dns1123(secret, max_len=253, what="--set registry_secret")
    size = options.settings.get("adapters_size", "2Gi")
    if not k8s._QUANTITY.match(size):
        raise InputError(f"--set adapters_size {size!r} is not a Kubernetes quantity (e.g. 2Gi)")
    return reg, on_state, identity(spec, options), secret, size


def export(spec: RunSpec, options: ExportOptions, serving: Serving) -> dict[str, Any]:
    _refuse_job_options(options)
    check_paths(spec)
    values.image("--serve-image", serving.image)
    n = _names(spec, options)
    reg, on_state, ident, secret, size = _settings(spec, options, serving)
    env = {**base_env("/secrets/passphrase", "/keyring"), **({"DOCKER_CONFIG": "/secrets/registry"} if secret else {})}
    init = _tgflow(options, "materialize", materialize_args(spec.route_key, reg, ident), env, size, on_state)
    init["command"] = ["/bin/sh", "-c", INIT_SHIM, "tgflow"]
    # `follow` is a regular container, not a native sidecar (an initContainer with restartPolicy:
    # Always): a Deployment's pod never completes, so the sidecar's one advantage for Jobs does
    # not apply, and the ordering that matters (an adapter on disk before vLLM starts) comes from
    # the `materialize` init container. A regular container also runs on every Kubernetes version.
    follow = _tgflow(options, "follow", materialize_args(spec.route_key, reg, ident, follow=True), env, size, on_state)
    pod = k8s._pod(n, options, [_vllm(spec, options, serving, init["securityContext"]), follow])
    pod["metadata"]["annotations"] = {"kubectl.kubernetes.io/default-container": "vllm"}
    job = pod["spec"]
    pod["spec"] = {"restartPolicy": "Always", "terminationGracePeriodSeconds": job["terminationGracePeriodSeconds"],
                   "securityContext": job["securityContext"], "automountServiceAccountToken": False,
                   "enableServiceLinks": False,  # no *_PORT variables: a Service named vllm would set VLLM_PORT
                   "initContainers": [init], "containers": job["containers"],
                   "volumes": _volumes(pod, on_state, secret, size)}
    deployment = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": n.meta(n.job), "spec": {
        "replicas": 1, "selector": {"matchLabels": n.labels},
        # A new pod needs a GPU of its own: stop the old one first rather than wait for a second GPU.
        "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 0, "maxUnavailable": 1}},
        "template": pod}}
    service = {"apiVersion": "v1", "kind": "Service", "metadata": n.meta(n.job), "spec": {
        "selector": n.labels, "ports": [{"name": "http", "port": PORT, "targetPort": "http", "protocol": "TCP"}]}}
    return {DEPLOYMENT: deployment, SERVICE: service}


def check(files: dict[str, Any]) -> list[str]:
    """kubernetes-validate (strict schemas) on both documents, plus the cross-references it cannot see."""
    import kubernetes_validate

    done = []
    for name in (DEPLOYMENT, SERVICE):
        kubernetes_validate.validate(files[name], k8s.KUBERNETES_VERSION, strict=True)
        done.append(f"{name}: kubernetes-validate {k8s.KUBERNETES_VERSION} strict")
    _cross_references(files[DEPLOYMENT], files[SERVICE])
    done.append(f"{DEPLOYMENT}, {SERVICE}: volumes, the adapters' memory-backed folder, selector and port")
    return done


def _cross_references(deployment: dict[str, Any], service: dict[str, Any]) -> None:
    pod = deployment["spec"]["template"]
    vols = {v["name"]: v for v in pod["spec"]["volumes"]}
    containers = pod["spec"]["initContainers"] + pod["spec"]["containers"]
    for c in containers:
        for m in c["volumeMounts"]:
            if m["name"] not in vols:
                raise ValueError(f"{DEPLOYMENT}: container {c['name']} mounts unknown volume {m['name']!r}")
        if not any(m["mountPath"] == ADAPTERS and vols[m["name"]].get("emptyDir", {}).get("medium") == "Memory"
                   for m in c["volumeMounts"]):
            raise ValueError(f"{DEPLOYMENT}: container {c['name']} does not mount the memory-backed {ADAPTERS}")
    labels = pod["metadata"]["labels"]
    if any(labels.get(k) != v for k, v in service["spec"]["selector"].items()) or \
            deployment["spec"]["selector"]["matchLabels"] != service["spec"]["selector"]:
        raise ValueError(f"{SERVICE}: its selector does not pick the Deployment's pods")
    ports = {p["name"] for c in pod["spec"]["containers"] for p in c.get("ports", [])}
    if any(p["targetPort"] not in ports for p in service["spec"]["ports"]):
        raise ValueError(f"{SERVICE}: a targetPort names no container port")
