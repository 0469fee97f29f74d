"""Vertex AI: a CustomJob, and with --schedule a Cloud Scheduler job that creates it.

Inputs and outputs live in a GCS bucket, mounted by Cloud Storage FUSE at
/gcs/<bucket>/... on every Vertex worker: config/ (run_spec.json), work/ (model
and feeds), keyring/ (the sealed keyring) and out/ (packages and route state,
so a restarted job resumes). The passphrase is a Secret Manager version name
in TGFLOW_PASSPHRASE_SECRET, read at start-up with the job's service account.
"""

from __future__ import annotations

import base64
import json
import re
from typing import Any

from tgsp.errors import InputError

from ..spec import RunSpec
from . import cron
from .jobspec import ExportOptions, base_env, check_paths, command, job_name, launch_flags, portable

# Fields the API sets; a request must not carry them.
_OUTPUT_ONLY = ("name", "state", "createTime", "startTime", "endTime", "updateTime", "error", "webAccessUris")


# Every --set KEY this backend reads; anything else is refused (a typo would be ignored).
SETTINGS = frozenset({'accelerator_type', 'bucket', 'disk_gb', 'machine_type', 'passphrase_secret', 'project', 'region', 'scheduler_service_account', 'service_account', 'time_zone'})

def _gcs(bucket: str) -> tuple[str, str]:
    if not bucket.startswith("gs://"):
        raise InputError(f"--set bucket must be a gs:// URI, not {bucket!r}")
    return bucket.rstrip("/"), "/gcs/" + bucket.removeprefix("gs://").rstrip("/")


def export(spec: RunSpec, options: ExportOptions) -> dict[str, Any]:
    check_paths(spec)
    s = lambda key, **kw: options.setting(key, "vertex", **kw)  # noqa: E731
    name = job_name(spec, options, max_len=63)
    project, region = s("project"), s("region")
    secret = s("passphrase_secret")
    if not re.fullmatch(r"projects/[^/]+/secrets/[^/]+/versions/[^/]+", secret):
        raise InputError("--set passphrase_secret must be projects/P/secrets/S/versions/V")
    bucket, mount = _gcs(s("bucket"))
    # Several replicas: each reads its place from Vertex AI's CLUSTER_SPEC (runners/distributed/clusters.py).
    cmd, args = command(f"{mount}/config", f"{mount}/work", f"{mount}/out", options.aggregate,
                        launch_flags(options, cluster="vertex"))
    env = base_env("", f"{mount}/keyring")
    del env["TGFLOW_PASSPHRASE_FILE"]
    env["TGFLOW_PASSPHRASE_SECRET"] = secret
    machine: dict[str, Any] = {"machineType": s("machine_type", default="g2-standard-8" if options.gpus else "n2-standard-8")}
    if options.gpus:
        machine.update(acceleratorType=s("accelerator_type", default="NVIDIA_L4"), acceleratorCount=options.gpus)
    pool = {
        "machineSpec": machine,
        "replicaCount": "1",
        "diskSpec": {"bootDiskType": "pd-ssd", "bootDiskSizeGb": int(s("disk_gb", default="100"))},
        "containerSpec": {"imageUri": options.image, "command": cmd, "args": args,
                          "env": [{"name": k, "value": v} for k, v in env.items()]},
    }
    # The chief (workerpool0) is node 0; the other nodes are workerpool1's replicas.
    pools = [pool] + ([{**pool, "replicaCount": str(options.nodes - 1)}] if options.nodes > 1 else [])
    job = {
        "displayName": name,
        "labels": {"tgflow-route": name.removeprefix("tgflow-")},
        "jobSpec": {
            "workerPoolSpecs": pools,
            "serviceAccount": s("service_account"),
            "baseOutputDirectory": {"outputUriPrefix": f"{bucket}/vertex-output/"},
            "scheduling": {"timeout": f"{options.timeout_minutes * 60}s", "restartJobOnWorkerRestart": True},
        },
    }
    files: dict[str, Any] = {"custom_job.json": job}
    native = None
    if options.schedule:
        native = cron.to_unix(cron.parse(options.schedule))
        files["scheduler_job.json"] = _scheduler(spec, job, name, native, project, region, s)
    files["job_spec.json"] = portable(
        spec, options, name=name, cmd=cmd, args=args, env=env, schedule=native,
        secrets=[{"name": "passphrase", "env": "TGFLOW_PASSPHRASE_SECRET", "ref": secret}],
        inputs=[{"name": n, "mount": f"{mount}/{n}", "ref": f"{bucket}/{n}/"} for n in ("config", "work", "keyring")],
        outputs=[{"name": "out", "mount": f"{mount}/out", "ref": f"{bucket}/out/"}])
    return files


def _scheduler(spec: RunSpec, job: dict[str, Any], name: str, native: str, project: str, region: str,
               s) -> dict[str, Any]:
    """A Cloud Scheduler job that POSTs the custom job on the schedule."""
    return {
        "name": f"projects/{project}/locations/{region}/jobs/{name}",
        "description": f"tgflow round for route {spec.route_key}",
        "schedule": native,
        "timeZone": s("time_zone", default="Etc/UTC"),
        "httpTarget": {
            "uri": f"https://{region}-aiplatform.googleapis.com/v1/projects/{project}/locations/{region}/customJobs",
            "httpMethod": "POST",
            "headers": {"Content-Type": "application/json"},
            "body": base64.b64encode(json.dumps(job, sort_keys=True).encode()).decode(),
            "oauthToken": {"serviceAccountEmail": s("scheduler_service_account", default=s("service_account")),
                           "scope": "https://www.googleapis.com/auth/cloud-platform"},
        },
        "retryConfig": {"retryCount": 0},
    }


def _parse(doc: dict[str, Any], message, label: str):
    from google.protobuf import json_format

    pb = json_format.ParseDict(doc, message()._pb, ignore_unknown_fields=False)  # unknown fields raise
    present = [f for f in _OUTPUT_ONLY if f in doc and not (label == "scheduler_job.json" and f == "name")]
    if present:
        raise ValueError(f"{label}: output-only field(s) {present} must not be sent")
    return pb


def check(files: dict[str, Any]) -> list[str]:
    from google.cloud.aiplatform_v1.types import CustomJob
    from google.cloud.scheduler_v1.types import Job

    job = files["custom_job.json"]
    pb = _parse(job, CustomJob, "custom_job.json")
    if not pb.display_name or not pb.job_spec.worker_pool_specs:
        raise ValueError("custom_job.json: displayName and jobSpec.workerPoolSpecs are required")
    for i, pool in enumerate(pb.job_spec.worker_pool_specs):
        if not pool.machine_spec.machine_type or not pool.replica_count or not pool.container_spec.image_uri:
            raise ValueError(f"custom_job.json: worker pool {i} needs machineType, replicaCount and imageUri")
    done = ["custom_job.json: aiplatform_v1.CustomJob protobuf (unknown fields rejected, required and output-only checked)"]
    if "scheduler_job.json" in files:
        sched = files["scheduler_job.json"]
        spb = _parse(sched, Job, "scheduler_job.json")
        if not spb.schedule or not spb.http_target.uri:
            raise ValueError("scheduler_job.json: schedule and httpTarget.uri are required")
        cron.parse(spb.schedule)
        body = json.loads(base64.b64decode(sched["httpTarget"]["body"]))
        if body != job:
            raise ValueError("scheduler_job.json: the request body is not the CustomJob")
        done.append("scheduler_job.json: scheduler_v1.Job protobuf, unix cron, body is the CustomJob")
    return done
