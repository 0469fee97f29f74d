"""Amazon SageMaker: a CreateTrainingJob request, and with --schedule an
EventBridge Scheduler CreateSchedule request that starts it.

Channels (S3 prefixes under --set bucket=s3://...):
  config/   run_spec.json          -> /opt/ml/input/data/config
  work/     model and feeds        -> /opt/ml/input/data/work
  keyring/  the sealed keyring     -> /opt/ml/input/data/keyring
Packages go to /opt/ml/model (uploaded to output/); the route state lives in
/opt/ml/checkpoints, which SageMaker syncs to checkpoints/, so a restarted or
spot-interrupted job resumes. The passphrase is only a Secrets Manager ARN.
"""

from __future__ import annotations

import json
from typing import Any

from tgsp.errors import InputError

from ..spec import RunSpec
from . import cron
from .jobspec import ExportOptions, base_env, check_paths, command, job_name, launch_flags, portable

_INPUT = "/opt/ml/input/data"


# Every --set KEY this backend reads; anything else is refused (a typo would be ignored).
SETTINGS = frozenset({'bucket', 'instance_type', 'passphrase_secret_arn', 'role_arn', 'scheduler_role_arn', 'time_zone', 'volume_gb'})

def _s3(prefix: str, sub: str) -> str:
    if not prefix.startswith("s3://"):
        raise InputError(f"--set bucket must be an s3:// URI, not {prefix!r}")
    return prefix.rstrip("/") + f"/{sub}/"


def training_job(spec: RunSpec, options: ExportOptions, name: str) -> tuple[dict[str, Any], dict[str, Any]]:
    s = lambda key, **kw: options.setting(key, "sagemaker", **kw)  # noqa: E731
    bucket = s("bucket")
    secret_arn = s("passphrase_secret_arn")
    if not secret_arn.startswith("arn:aws:secretsmanager:"):
        raise InputError("--set passphrase_secret_arn must be a Secrets Manager ARN (arn:aws:secretsmanager:...)")
    # Several instances: each reads its place from SageMaker's resourceconfig.json (runners/distributed/clusters.py).
    cmd, args = command(f"{_INPUT}/config", f"{_INPUT}/work", "/opt/ml/checkpoints", options.aggregate,
                        launch_flags(options, cluster="sagemaker"))
    env = base_env("", f"{_INPUT}/keyring")
    del env["TGFLOW_PASSPHRASE_FILE"]
    env["TGFLOW_PASSPHRASE_SECRET"] = secret_arn
    if options.gpus > 1 and "instance_type" not in options.settings:
        raise InputError(f"--gpus {options.gpus}: name an instance type with that many GPUs",
                         hint="e.g. --set instance_type=ml.g5.12xlarge (4 GPUs) or ml.p4d.24xlarge (8)")
    instance = s("instance_type", default="ml.g5.2xlarge" if options.gpus else "ml.m5.2xlarge")
    channel = lambda name_, sub: {  # noqa: E731
        "ChannelName": name_, "InputMode": "File",
        "DataSource": {"S3DataSource": {"S3DataType": "S3Prefix", "S3Uri": _s3(bucket, sub),
                                        "S3DataDistributionType": "FullyReplicated"}}}
    request = {
        "TrainingJobName": name,
        "AlgorithmSpecification": {"TrainingImage": options.image, "TrainingInputMode": "File",
                                   "ContainerEntrypoint": cmd, "ContainerArguments": args},
        "RoleArn": s("role_arn"),
        "InputDataConfig": [channel("config", "config"), channel("work", "work"), channel("keyring", "keyring")],
        "OutputDataConfig": {"S3OutputPath": _s3(bucket, "output")},
        "ResourceConfig": {"InstanceType": instance, "InstanceCount": options.nodes,
                           "VolumeSizeInGB": int(s("volume_gb", default="50"))},
        "StoppingCondition": {"MaxRuntimeInSeconds": options.timeout_minutes * 60},
        "CheckpointConfig": {"S3Uri": _s3(bucket, "checkpoints"), "LocalPath": "/opt/ml/checkpoints"},
        "HyperParameters": {"route_key": spec.route_key, "spec_version": spec.spec_version},
        "Environment": env,
        "RetryStrategy": {"MaximumRetryAttempts": max(1, min(options.retries, 30))},
        "Tags": [{"Key": "tgflow:route", "Value": spec.route_key}],
    }
    return request, env


def export(spec: RunSpec, options: ExportOptions) -> dict[str, Any]:
    check_paths(spec)
    name = job_name(spec, options, max_len=63)
    request, env = training_job(spec, options, name)
    files: dict[str, Any] = {"training_job.json": request}
    native = None
    if options.schedule:
        native = cron.to_aws(cron.parse(options.schedule))
        scheduled = dict(request)
        # Every run needs a unique job name: EventBridge fills in the execution id.
        scheduled["TrainingJobName"] = f"{name[:26]}-<aws.scheduler.execution-id>"
        files["schedule.json"] = {
            "Name": name,
            "ScheduleExpression": native,
            "ScheduleExpressionTimezone": options.settings.get("time_zone", "UTC"),
            "FlexibleTimeWindow": {"Mode": "OFF"},
            "State": "ENABLED",
            "Target": {"Arn": "arn:aws:scheduler:::aws-sdk:sagemaker:createTrainingJob",
                       "RoleArn": options.setting("scheduler_role_arn", "sagemaker"),
                       "Input": json.dumps(scheduled, sort_keys=True),
                       "RetryPolicy": {"MaximumRetryAttempts": 0}},
        }
    files["job_spec.json"] = portable(
        spec, options, name=name, cmd=request["AlgorithmSpecification"]["ContainerEntrypoint"],
        args=request["AlgorithmSpecification"]["ContainerArguments"], env=env, schedule=native,
        secrets=[{"name": "passphrase", "env": "TGFLOW_PASSPHRASE_SECRET", "ref": env["TGFLOW_PASSPHRASE_SECRET"]}],
        inputs=[{"name": c["ChannelName"], "mount": f"{_INPUT}/{c['ChannelName']}",
                 "ref": c["DataSource"]["S3DataSource"]["S3Uri"]} for c in request["InputDataConfig"]],
        outputs=[{"name": "state-and-packages", "mount": "/opt/ml/checkpoints", "ref": request["CheckpointConfig"]["S3Uri"]}])
    return files


# --- validation ------------------------------------------------------------------
def _constraints(shape, value, path: str, problems: list[str], unchecked: list[str]) -> None:
    """What ParamValidator skips: enum and pattern (and string length) from the model.
    AWS patterns are Java regexes (\\p{...} classes): the `regex` module reads them."""
    t = shape.type_name
    if t == "structure":
        for key, val in value.items():
            if key in shape.members:
                _constraints(shape.members[key], val, f"{path}.{key}", problems, unchecked)
    elif t == "list":
        for i, val in enumerate(value):
            _constraints(shape.member, val, f"{path}[{i}]", problems, unchecked)
    elif t == "map":
        for key, val in value.items():
            _constraints(shape.key, key, f"{path}<key>", problems, unchecked)
            _constraints(shape.value, val, f"{path}.{key}", problems, unchecked)
    elif t == "string":
        meta = shape.metadata
        if shape.enum and value not in shape.enum:
            problems.append(f"{path}: {value!r} is not one of {shape.enum}")
        if "pattern" in meta:
            import regex

            try:
                ok = regex.fullmatch(meta["pattern"].removeprefix("^").removesuffix("$"), value, regex.S)
            except regex.error:
                unchecked.append(path)
            else:
                if not ok:
                    problems.append(f"{path}: {value!r} does not match {meta['pattern']}")
        if "max" in meta and len(value) > meta["max"]:
            problems.append(f"{path}: longer than {meta['max']}")


def _validate(service: str, operation: str, params: dict[str, Any]) -> str:
    import botocore.session
    from botocore.validate import ParamValidator

    op = botocore.session.get_session().get_service_model(service).operation_model(operation)
    report = ParamValidator().validate(params, op.input_shape)
    if report.has_errors():
        raise ValueError(f"{service} {operation}: {report.generate_report()}")
    problems: list[str] = []
    unchecked: list[str] = []
    _constraints(op.input_shape, params, operation, problems, unchecked)
    if problems:
        raise ValueError(f"{service} {operation}: " + "; ".join(problems))
    note = f" ({len(unchecked)} patterns not expressible in Python: {', '.join(unchecked)})" if unchecked else ""
    return f"botocore ParamValidator + enum/pattern: {service} {operation}{note}"


def check(files: dict[str, Any]) -> list[str]:
    done = [f"training_job.json: {_validate('sagemaker', 'CreateTrainingJob', files['training_job.json'])}"]
    if "schedule.json" in files:
        sched = files["schedule.json"]
        done.append(f"schedule.json: {_validate('scheduler', 'CreateSchedule', sched)}")
        inner = json.loads(sched["Target"]["Input"])
        inner["TrainingJobName"] = files["training_job.json"]["TrainingJobName"]  # placeholder filled at run time
        done.append(f"schedule.json Target.Input: {_validate('sagemaker', 'CreateTrainingJob', inner)}")
    return done
