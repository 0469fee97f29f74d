"""Kubernetes: a ConfigMap with the run spec, a Job, and a CronJob with --schedule.

Mounts: /config (ConfigMap), /keyring/keys, /keyring/trust and
/keyring/revocations (one Secret per keyring folder, read-only; the last one
optional), /secrets/passphrase (Secret, read-only), /work (inputs PVC, read-only), /out (state PVC: packages and
route state, so a restarted pod resumes), /tmp (emptyDir). The container runs as
a non-root user on a read-only root filesystem.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from tgsp.errors import InputError

from ..spec import RunSpec
from . import cron, k8s_dist, k8s_telemetry
from .jobspec import RETRY_CODES, ExportOptions, base_env, check_paths, command, dns1123, job_name, portable

KUBERNETES_VERSION = "1.32"  # schemas used by --check


# Every --set KEY this backend reads; anything else is refused (a typo would be ignored).
SETTINGS = frozenset({'engine', 'keyring_secret', 'kubectl_image', 'namespace', 'passphrase_secret', 'runtime',
                      'state_claim', 'time_zone', 'work_claim'}) | k8s_telemetry.SETTINGS

_QUANTITY = re.compile(r"^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$")  # resource.Quantity's own pattern


@dataclass(frozen=True)
class _Names:
    job: str
    namespace: str | None
    labels: dict[str, str]
    passphrase_secret: str
    keyring_secret: str
    work_claim: str
    state_claim: str

    def meta(self, name: str) -> dict[str, Any]:
        return {"name": name, "labels": self.labels, **({"namespace": self.namespace} if self.namespace else {})}


def _names(spec: RunSpec, options: ExportOptions) -> _Names:
    # Several nodes: the engine's pod hostnames add a generated suffix and -node-0-<i>.
    name = job_name(spec, options, **({"max_len": k8s_dist.MAX_NAME} if options.distributed else {}))
    ns = options.settings.get("namespace")
    if ns is not None:
        dns1123(ns, what="--set namespace")
    for what, value in (("--cpu", options.cpu), ("--memory", options.memory)):
        if not _QUANTITY.match(value):
            raise InputError(f"{what} {value!r} is not a Kubernetes quantity (e.g. 2, 500m, 8Gi)")
    step = f"-{options.aggregate.step}" if options.aggregate else ""
    labels = {"app.kubernetes.io/name": "tgflow",
              "app.kubernetes.io/component": f"fed{step}" if step else "peft-run",
              "tgflow.dev/route": name.removeprefix("tgflow-").removesuffix(step)}
    return _Names(name, ns, labels, options.settings.get("passphrase_secret", "tgflow-passphrase"),
                  dns1123(options.settings.get("keyring_secret", "tgflow-keyring"), max_len=50,
                          what="--set keyring_secret"),
                  options.settings.get("work_claim", "tgflow-work"), options.settings.get("state_claim", "tgflow-state"))


def _container(options: ExportOptions, cmd: list[str], args: list[str], env: dict[str, str]) -> dict[str, Any]:
    limits = {"cpu": options.cpu, "memory": options.memory}
    if options.gpus:
        limits["nvidia.com/gpu"] = str(options.gpus)
    return {
        "name": "tgflow",
        "image": options.image,
        "imagePullPolicy": "IfNotPresent",
        "command": cmd,
        "args": args,
        "env": [{"name": k, "value": v} for k, v in env.items()],
        "resources": {"requests": {"cpu": options.cpu, "memory": options.memory}, "limits": limits},
        "securityContext": {"runAsNonRoot": True, "runAsUser": 10001, "runAsGroup": 10001,
                            "readOnlyRootFilesystem": True, "allowPrivilegeEscalation": False,
                            "capabilities": {"drop": ["ALL"]}},
        "volumeMounts": [
            {"name": "config", "mountPath": "/config", "readOnly": True},
            # One Secret per keyring folder (Secret keys are flat file names):
            # <keyring_secret>-keys, -trust and (optional) -revocations.
            {"name": "keyring-keys", "mountPath": "/keyring/keys", "readOnly": True},
            {"name": "keyring-trust", "mountPath": "/keyring/trust", "readOnly": True},
            {"name": "keyring-revocations", "mountPath": "/keyring/revocations", "readOnly": True},
            {"name": "passphrase", "mountPath": "/secrets", "readOnly": True},
            {"name": "work", "mountPath": "/work", "readOnly": True},
            {"name": "state", "mountPath": "/out"},
            {"name": "tmp", "mountPath": "/tmp"},
        ],
    }


def _pod(n: _Names, options: ExportOptions, containers: list[dict[str, Any]]) -> dict[str, Any]:
    ks = n.keyring_secret
    return {
        "metadata": {"labels": n.labels},
        "spec": {
            "restartPolicy": "Never",
            "terminationGracePeriodSeconds": options.grace_seconds,
            "securityContext": {"runAsNonRoot": True, "fsGroup": 10001, "seccompProfile": {"type": "RuntimeDefault"}},
            "containers": containers,
            "volumes": [
                {"name": "config", "configMap": {"name": f"{n.job}-spec"}},
                {"name": "keyring-keys", "secret": {"secretName": f"{ks}-keys", "defaultMode": 0o400}},
                {"name": "keyring-trust", "secret": {"secretName": f"{ks}-trust", "defaultMode": 0o400}},
                {"name": "keyring-revocations", "secret": {"secretName": f"{ks}-revocations",
                                                           "defaultMode": 0o400, "optional": True}},
                {"name": "passphrase", "secret": {"secretName": n.passphrase_secret, "defaultMode": 0o400,
                                                  "items": [{"key": "passphrase", "path": "passphrase"}]}},
                {"name": "work", "persistentVolumeClaim": {"claimName": n.work_claim, "readOnly": True}},
                {"name": "state", "persistentVolumeClaim": {"claimName": n.state_claim}},
                {"name": "tmp", "emptyDir": {}},
            ],
        },
    }


def _job_spec(options: ExportOptions, pod: dict[str, Any]) -> dict[str, Any]:
    return {
        "backoffLimit": options.retries,
        "activeDeadlineSeconds": options.timeout_minutes * 60,
        # busy (73), checkpointed (75) and terminated (143) are retried without counting; policy outcomes are final.
        "podFailurePolicy": {"rules": [
            {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}]},
            {"action": "Ignore", "onExitCodes": {"containerName": "tgflow", "operator": "In", "values": list(RETRY_CODES)}},
            {"action": "FailJob", "onExitCodes": {"containerName": "tgflow", "operator": "In", "values": list(options.final_codes())}},
        ]},
        "template": pod,
    }


def _cronjob(n: _Names, options: ExportOptions, job_spec: dict[str, Any], native: str) -> dict[str, Any]:
    doc = {"apiVersion": "batch/v1", "kind": "CronJob", "metadata": n.meta(n.job),
           "spec": {"schedule": native, "concurrencyPolicy": "Forbid", "startingDeadlineSeconds": 3600,
                    "successfulJobsHistoryLimit": 3, "failedJobsHistoryLimit": 5,
                    "jobTemplate": {"metadata": {"labels": n.labels}, "spec": job_spec}}}
    if "time_zone" in options.settings:
        doc["spec"]["timeZone"] = options.settings["time_zone"]
    return doc


def export(spec: RunSpec, options: ExportOptions) -> dict[str, Any]:
    check_paths(spec)
    n = _names(spec, options)
    which = k8s_dist.engine(options) if options.distributed else None
    launch = k8s_dist.launch(which, n, options) if which else []
    cmd, args = command("/config", "/work", "/out", options.aggregate, launch)
    env = {**base_env("/secrets/passphrase", "/keyring"), **k8s_telemetry.env(options.settings, spec.route_key)}
    container = _container(options, cmd, args, env)
    pod = _pod(n, options, [container])
    k8s_telemetry.mount(options.settings, container, pod)
    job_spec = _job_spec(options, pod)
    files: dict[str, Any] = {
        "configmap.yaml": {"apiVersion": "v1", "kind": "ConfigMap", "metadata": n.meta(f"{n.job}-spec"),
                           "data": {"run_spec.json": json.dumps(spec.model_dump(mode="json"), indent=2, sort_keys=True)}},
    }
    if which:
        files[k8s_dist.FILES[which]] = k8s_dist.document(which, n, options, container, pod, job_spec)
    else:
        files["job.yaml"] = {"apiVersion": "batch/v1", "kind": "Job", "metadata": n.meta(n.job), "spec": job_spec}
    native = None
    if options.schedule:
        native = cron.to_unix(cron.parse(options.schedule))
        if which:
            security = (pod["spec"]["securityContext"], container["securityContext"])
            files.update(k8s_dist.scheduled(which, n, options, files[k8s_dist.FILES[which]], native, security))
        else:
            files["cronjob.yaml"] = _cronjob(n, options, job_spec, native)
    ks = n.keyring_secret
    files["job_spec.json"] = portable(
        spec, options, name=n.job, cmd=cmd, args=args, env=env, schedule=native,
        secrets=[{"name": "passphrase", "mount": "/secrets/passphrase", "ref": f"secret/{n.passphrase_secret}#passphrase"},
                 {"name": "keyring-keys", "mount": "/keyring/keys", "ref": f"secret/{ks}-keys"},
                 {"name": "keyring-trust", "mount": "/keyring/trust", "ref": f"secret/{ks}-trust"},
                 {"name": "keyring-revocations", "mount": "/keyring/revocations",
                  "ref": f"secret/{ks}-revocations", "optional": True}],
        inputs=[{"name": "work", "mount": "/work", "ref": f"pvc/{n.work_claim}", "read_only": True}],
        outputs=[{"name": "out", "mount": "/out", "ref": f"pvc/{n.state_claim}"}])
    return files


def check(files: dict[str, Any]) -> list[str]:
    """Validate with kubernetes-validate (strict schemas) and, for the distributed engines,
    the Kubeflow SDKs' models; plus cross-references."""
    import kubernetes_validate

    validate = lambda doc: kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)  # noqa: E731
    done = []
    for name in ("configmap.yaml", "job.yaml", "cronjob.yaml", *k8s_dist.LAUNCHER_FILES):
        if name in files:
            validate(files[name])
            done.append(f"{name}: kubernetes-validate {KUBERNETES_VERSION} strict")
    if "run_spec.json" not in files["configmap.yaml"]["data"]:
        raise ValueError("configmap.yaml holds no run_spec.json")
    for name, pods in _pods(files, done, validate):
        for pod, containers in pods:
            _cross_references(name, pod, containers, files["configmap.yaml"]["metadata"]["name"])
        done.append(f"{name}: volumes and ConfigMap cross-references")
    return done


def _pods(files: dict[str, Any], done: list[str], validate):
    for name in ("job.yaml", "cronjob.yaml"):
        if name in files and "launcher-configmap.yaml" not in files:
            spec = files[name]["spec"]
            pod = (spec["jobTemplate"]["spec"] if name == "cronjob.yaml" else spec)["template"]["spec"]
            yield name, [(pod, pod["containers"])]
    for name in k8s_dist.FILES.values():
        if name in files:
            checked, pods = k8s_dist.check(name, files[name], validate)
            done.extend(checked)
            if "launcher-configmap.yaml" in files:
                done.append(k8s_dist.check_scheduled(files, name))
            yield name, pods


def _cross_references(name: str, pod: dict[str, Any], containers: list[dict[str, Any]], cm: str) -> None:
    vols = {v["name"]: v for v in pod["volumes"]}
    if vols["config"]["configMap"]["name"] != cm:
        raise ValueError(f"{name}: the config volume names ConfigMap {vols['config']['configMap']['name']!r}, not {cm!r}")
    for c in containers:
        for m in c.get("volumeMounts", []):
            if m["name"] not in vols:
                raise ValueError(f"{name}: container {c['name']} mounts unknown volume {m['name']!r}")
