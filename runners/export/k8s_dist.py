"""Kubernetes, several processes or nodes (``--nodes N --procs-per-node P``), on the engine
the cluster already runs (``--set engine=...``):

- ``trainjob`` (default): a Kubeflow Trainer v2 TrainJob on the ``torch-distributed``
  ClusterTrainingRuntime. Trainer sets PET_NODE_RANK, PET_MASTER_ADDR and PET_MASTER_PORT in
  every node's container; the command reads them as $(PET_...) references.
- ``jobset``: for clusters without Trainer, a JobSet with one Indexed Job of N pods behind a
  headless service; node rank = the pod's completion index, node 0 at
  ``<name>-node-0-0.<name>``.
- ``legacy-pytorchjob``: a Kubeflow Training Operator ``PyTorchJob`` (kubeflow.org/v1,
  deprecated upstream in favour of TrainJob), only on request.

Every node mounts the same volumes; only node 0 writes the state claim, which must be
ReadWriteMany when the nodes are different machines (docs/export.md#scaling-out).
"""

from __future__ import annotations

from typing import Any

from tgsp.errors import InputError

from .jobspec import ExportOptions, launch_flags

ENGINES = ("trainjob", "jobset", "legacy-pytorchjob")
TRAINER_GROUP = "trainer.kubeflow.org"
PORT = "29500"
_RANK_ANNOTATION = "metadata.annotations['batch.kubernetes.io/job-completion-index']"
_JOBSET_LABEL = "metadata.labels['jobset.sigs.k8s.io/jobset-name']"
KUBECTL_IMAGE = "registry.k8s.io/kubectl:v1.32.0"
# Each engine's resource, for the scheduled launcher's Role.
RESOURCES = {"trainjob": (TRAINER_GROUP, "trainjobs"), "jobset": ("jobset.x-k8s.io", "jobsets"),
             "legacy-pytorchjob": ("kubeflow.org", "pytorchjobs")}
# <name>-<5 generated>-node-0-<i> must stay a DNS label (pod hostnames): 63 - 6 - 9.
MAX_NAME = 47


def engine(options: ExportOptions) -> str:
    value = options.settings.get("engine", "trainjob")
    if value not in ENGINES:
        raise InputError(f"--set engine={value!r} is not one of {', '.join(ENGINES)}",
                         hint="trainjob (Kubeflow Trainer v2), jobset (no Trainer), legacy-pytorchjob (kubeflow.org/v1)")
    return value


def launch(which: str, n, options: ExportOptions) -> list[str]:
    """peft run's launcher flags: node rank and node 0's address as each engine provides them."""
    rank, addr, port = {
        "trainjob": ("$(PET_NODE_RANK)", "$(PET_MASTER_ADDR)", "$(PET_MASTER_PORT)"),
        # From the pod's own JobSet name, which a scheduled run generates.
        "jobset": ("$(NODE_RANK)", "$(JOBSET_NAME)-node-0-0.$(JOBSET_NAME)", PORT),
        # The operator sets the pod's node index in RANK and node 0's address in MASTER_ADDR/PORT.
        "legacy-pytorchjob": ("$(RANK)", "$(MASTER_ADDR)", "$(MASTER_PORT)"),
    }[which]
    return launch_flags(options, node_rank=rank, master_addr=addr, master_port=port)


def trainjob(n, options: ExportOptions, container: dict[str, Any], pod: dict[str, Any]) -> dict[str, Any]:
    trainer = {"image": container["image"], "command": container["command"], "args": container["args"],
               "env": container["env"], "numNodes": options.nodes, "numProcPerNode": options.procs_per_node,
               "resourcesPerNode": container["resources"]}
    spec = pod["spec"]
    patch = {"securityContext": spec["securityContext"], "terminationGracePeriodSeconds": spec["terminationGracePeriodSeconds"],
             "volumes": spec["volumes"],
             "containers": [{"name": "node", "volumeMounts": container["volumeMounts"],
                             "securityContext": container["securityContext"]}]}
    runtime = options.settings.get("runtime", "torch-distributed")
    return {
        "apiVersion": f"{TRAINER_GROUP}/v1alpha1", "kind": "TrainJob", "metadata": n.meta(n.job),
        "spec": {
            "runtimeRef": {"apiGroup": TRAINER_GROUP, "kind": "ClusterTrainingRuntime", "name": runtime},
            "activeDeadlineSeconds": options.timeout_minutes * 60,
            "trainer": trainer,
            "runtimePatches": [{"manager": "tgflow.dev/export", "trainingRuntimeSpec": {"template": {"spec": {
                "replicatedJobs": [{"name": "node", "template": {"spec": {"template": {"spec": patch}}}}]}}}}],
        },
    }


def jobset(n, options: ExportOptions, container: dict[str, Any], pod: dict[str, Any],
           job_spec: dict[str, Any]) -> dict[str, Any]:
    node = {**container, "env": [*container["env"],
                                 {"name": "NODE_RANK", "valueFrom": {"fieldRef": {"fieldPath": _RANK_ANNOTATION}}},
                                 {"name": "JOBSET_NAME", "valueFrom": {"fieldRef": {"fieldPath": _JOBSET_LABEL}}}]}
    job = {**job_spec, "completionMode": "Indexed", "completions": options.nodes, "parallelism": options.nodes,
           "backoffLimit": 0,  # one node failing restarts them all (the JobSet's failure policy)
           "template": {**pod, "spec": {**pod["spec"], "containers": [node]}}}
    return {
        "apiVersion": "jobset.x-k8s.io/v1alpha2", "kind": "JobSet", "metadata": n.meta(n.job),
        "spec": {
            "network": {"enableDNSHostnames": True, "publishNotReadyAddresses": True},
            "successPolicy": {"operator": "All"},
            # A final outcome (the Job's podFailurePolicy FailJob) ends the JobSet; other failures restart it.
            "failurePolicy": {"maxRestarts": options.retries, "rules": [
                {"name": "final-outcome", "action": "FailJobSet", "onJobFailureReasons": ["PodFailurePolicy"]}]},
            "replicatedJobs": [{"name": "node", "replicas": 1, "template": {"metadata": {"labels": n.labels},
                                                                             "spec": job}}],
        },
    }


def pytorchjob(n, options: ExportOptions, container: dict[str, Any], pod: dict[str, Any]) -> dict[str, Any]:
    node = {**container, "name": "pytorch"}  # the container the operator configures
    template = {**pod, "spec": {**pod["spec"], "containers": [node]}}
    replicas = {"Master": {"replicas": 1, "restartPolicy": "Never", "template": template}}
    if options.nodes > 1:
        replicas["Worker"] = {"replicas": options.nodes - 1, "restartPolicy": "Never", "template": template}
    return {
        "apiVersion": "kubeflow.org/v1", "kind": "PyTorchJob", "metadata": n.meta(n.job),
        "spec": {"nprocPerNode": str(options.procs_per_node), "pytorchReplicaSpecs": replicas,
                 "runPolicy": {"backoffLimit": options.retries, "activeDeadlineSeconds": options.timeout_minutes * 60,
                               "cleanPodPolicy": "None"}},
    }


FILES = {"trainjob": "trainjob.yaml", "jobset": "jobset.yaml", "legacy-pytorchjob": "pytorchjob.yaml"}
LAUNCHER_FILES = ("launcher-configmap.yaml", "launcher-serviceaccount.yaml", "launcher-role.yaml",
                  "launcher-rolebinding.yaml")


def document(which: str, n, options: ExportOptions, container: dict[str, Any], pod: dict[str, Any],
             job_spec: dict[str, Any]) -> dict[str, Any]:
    if which == "trainjob":
        return trainjob(n, options, container, pod)
    if which == "jobset":
        return jobset(n, options, container, pod, job_spec)
    return pytorchjob(n, options, container, pod)


def scheduled(which: str, n, options: ExportOptions, doc: dict[str, Any], native: str,
              security: tuple[dict, dict]) -> dict[str, Any]:
    """A CronJob can only create Jobs: on schedule, a small Job runs ``kubectl create`` of the
    engine's document (with a generated name, one per run) from a ConfigMap, as a
    ServiceAccount whose Role may create that one kind of resource in this namespace and
    nothing else. Overlapping rounds of the route wait on its lock (--wait-busy)."""
    import yaml

    group, plural = RESOURCES[which]
    launcher, file = f"{n.job}-launcher", FILES[which]
    meta = {k: v for k, v in doc["metadata"].items() if k != "name"}
    manifest = {**doc, "metadata": {"generateName": f"{n.job}-", **meta}}
    pod_security, container_security = security
    container = {
        "name": "launcher", "image": options.settings.get("kubectl_image", KUBECTL_IMAGE),
        "args": ["create", "-f", f"/launch/{file}"],
        "resources": {"requests": {"cpu": "50m", "memory": "64Mi"}, "limits": {"cpu": "200m", "memory": "128Mi"}},
        "env": [{"name": "HOME", "value": "/tmp"}],  # kubectl's discovery cache, on a read-only root
        "securityContext": container_security,
        "volumeMounts": [{"name": "launch", "mountPath": "/launch", "readOnly": True},
                         {"name": "tmp", "mountPath": "/tmp"}],
    }
    pod = {"metadata": {"labels": n.labels},
           "spec": {"serviceAccountName": launcher, "restartPolicy": "Never", "securityContext": pod_security,
                    "containers": [container],
                    "volumes": [{"name": "launch", "configMap": {"name": launcher}}, {"name": "tmp", "emptyDir": {}}]}}
    cron = {"schedule": native, "concurrencyPolicy": "Forbid", "startingDeadlineSeconds": 3600,
            "successfulJobsHistoryLimit": 3, "failedJobsHistoryLimit": 5,
            "jobTemplate": {"metadata": {"labels": n.labels},
                            "spec": {"backoffLimit": 2, "activeDeadlineSeconds": 600, "template": pod}}}
    if "time_zone" in options.settings:
        cron["timeZone"] = options.settings["time_zone"]
    return {
        "launcher-configmap.yaml": {"apiVersion": "v1", "kind": "ConfigMap", "metadata": n.meta(launcher),
                                    "data": {file: yaml.safe_dump(manifest, sort_keys=False)}},
        "launcher-serviceaccount.yaml": {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": n.meta(launcher)},
        "launcher-role.yaml": {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role", "metadata": n.meta(launcher),
                               "rules": [{"apiGroups": [group], "resources": [plural], "verbs": ["create"]}]},
        "launcher-rolebinding.yaml": {
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding", "metadata": n.meta(launcher),
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": launcher},
            "subjects": [{"kind": "ServiceAccount", "name": launcher,
                          **({"namespace": n.namespace} if n.namespace else {})}]},
        "cronjob.yaml": {"apiVersion": "batch/v1", "kind": "CronJob", "metadata": n.meta(n.job), "spec": cron},
    }


def check_scheduled(files: dict[str, Any], which_file: str) -> str:
    """The launcher creates exactly the exported document (with a generated name)."""
    import yaml

    launched = yaml.safe_load(files["launcher-configmap.yaml"]["data"][which_file])
    doc = files[which_file]
    expect = {**doc, "metadata": {k: v for k, v in doc["metadata"].items() if k != "name"}}
    got = {**launched, "metadata": {k: v for k, v in launched["metadata"].items() if k != "generateName"}}
    if got != expect or launched["metadata"].get("generateName") != f"{doc['metadata']['name']}-":
        raise ValueError(f"launcher-configmap.yaml: the launched {which_file} is not the exported one")
    role = files["launcher-role.yaml"]["rules"]
    kind = next(k for k, f in FILES.items() if f == which_file)
    group, plural = RESOURCES[kind]
    if role != [{"apiGroups": [group], "resources": [plural], "verbs": ["create"]}]:
        raise ValueError("launcher-role.yaml: the launcher may only create the engine's resource")
    return f"launcher-configmap.yaml: launches {which_file} as exported; its Role creates {plural} only"


# --- validation ------------------------------------------------------------------
def _round_trip(model, doc: dict[str, Any], label: str) -> None:
    """The SDK's models drop fields they do not know: the document must survive a round trip."""
    back = model.from_dict(doc).to_dict()
    if back != doc:
        raise ValueError(f"{label}: the SDK model dropped or changed fields ({_first_difference(doc, back)})")


def _first_difference(a: Any, b: Any, path: str = "") -> str:
    if isinstance(a, dict) and isinstance(b, dict):
        for key in sorted(set(a) | set(b)):
            if key not in b or key not in a:
                return f"{path}.{key}"
            if a[key] != b[key]:
                return _first_difference(a[key], b[key], f"{path}.{key}")
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        for i, (x, y) in enumerate(zip(a, b)):
            if x != y:
                return _first_difference(x, y, f"{path}[{i}]")
    return path or "the document"


def _openapi(cls_name: str, doc: Any, path: str, models) -> None:
    """Walk a document against the Training Operator SDK's generated models (attribute_map):
    every key must be a field of its model (the kubernetes client's own types for pods)."""
    import kubernetes.client as k8s

    if cls_name.startswith("dict("):
        for key, value in doc.items():
            _openapi(cls_name[5:-1].split(", ", 1)[1], value, f"{path}.{key}", models)
        return
    if cls_name.startswith("list["):
        for i, value in enumerate(doc):
            _openapi(cls_name[5:-1], value, f"{path}[{i}]", models)
        return
    cls = getattr(models, cls_name, None) or getattr(k8s, cls_name, None)
    if cls is None:
        return  # a primitive: str, int, bool, object
    fields = {json_key: cls.openapi_types[attr] for attr, json_key in cls.attribute_map.items()}
    for key, value in doc.items():
        if key not in fields:
            raise ValueError(f"{path}: {cls_name} has no field {key!r}")
        _openapi(fields[key], value, f"{path}.{key}", models)


def _as_job(pod_template: dict[str, Any], name: str) -> dict[str, Any]:
    return {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": name}, "spec": {"template": pod_template}}


def check(name: str, doc: dict[str, Any], validate) -> tuple[list[str], list[tuple[dict, list[dict]]]]:
    """Validate one engine's document; returns what was checked and (pod spec, containers)
    pairs for the volume cross-references. ``validate`` is kubernetes-validate's, for pods."""
    if name == "trainjob.yaml":
        from kubeflow_trainer_api.models import TrainerV1alpha1TrainJob

        _round_trip(TrainerV1alpha1TrainJob, doc, name)
        [patch] = doc["spec"]["runtimePatches"]
        [node] = patch["trainingRuntimeSpec"]["template"]["spec"]["replicatedJobs"]
        spec = node["template"]["spec"]["template"]["spec"]
        return [f"{name}: kubeflow-trainer-api TrainerV1alpha1TrainJob (strict types, round-trips)"], [
            (spec, spec["containers"])]
    if name == "jobset.yaml":
        from kubeflow_trainer_api.models import JobsetV1alpha2JobSet

        _round_trip(JobsetV1alpha2JobSet, doc, name)
        job = doc["spec"]["replicatedJobs"][0]["template"]
        validate({"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": doc["metadata"]["name"]},
                  "spec": job["spec"]})
        spec = job["spec"]["template"]["spec"]
        return [f"{name}: kubeflow-trainer-api JobsetV1alpha2JobSet (round-trips); its Job: kubernetes-validate strict"], [
            (spec, spec["containers"])]
    from kubeflow.training import models

    _openapi("KubeflowOrgV1PyTorchJob", doc, name, models)
    pods = []
    for role, replica in doc["spec"]["pytorchReplicaSpecs"].items():
        validate(_as_job(replica["template"], f"{doc['metadata']['name']}-{role.lower()}"))
        pods.append((replica["template"]["spec"], replica["template"]["spec"]["containers"]))
    return [f"{name}: kubeflow-training KubeflowOrgV1PyTorchJob models; pod templates: kubernetes-validate strict"], pods
