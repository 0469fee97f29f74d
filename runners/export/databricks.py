"""Databricks: a Jobs API 2.1 job (the shape `databricks jobs create --json` takes).

One single-node task on a new cluster running the tgflow runner image
(Databricks Container Services), started as a python_wheel_task on tgflow's
console entry point. Inputs, outputs and the sealed keyring live on Unity
Catalog volumes (FUSE-mounted on the cluster); the passphrase is a secret-scope
reference, {{secrets/<scope>/<key>}}, which Databricks resolves at run time.
Schedules use Quartz cron.
"""

from __future__ import annotations

import re
from typing import Any

from tgsp.errors import InputError

from ..spec import RunSpec
from . import cron
from .jobspec import ExportOptions, base_env, check_paths, command, job_name, launch_flags, portable

_TASK_KEY = "peft_run"


# Every --set KEY this backend reads; anything else is refused (a typo would be ignored).
SETTINGS = frozenset({'config_dir', 'keyring_dir', 'node_type_id', 'out_dir', 'secret_key', 'secret_scope', 'spark_version', 'time_zone', 'work_dir'})

def export(spec: RunSpec, options: ExportOptions) -> dict[str, Any]:
    check_paths(spec)
    s = lambda key, **kw: options.setting(key, "databricks", **kw)  # noqa: E731
    name = job_name(spec, options, max_len=100)
    work, out = s("work_dir").rstrip("/"), s("out_dir").rstrip("/")
    for label, path in (("work_dir", work), ("out_dir", out)):
        if not path.startswith(("/Volumes/", "/dbfs/", "/Workspace/")):
            raise InputError(f"--set {label} must be a /Volumes/, /dbfs/ or /Workspace/ path, not {path!r}")
    config = s("config_dir", default=f"{work}/config").rstrip("/")
    keyring = s("keyring_dir", default=f"{work}/keyring").rstrip("/")
    scope, key = s("secret_scope"), s("secret_key", default="passphrase")
    # Several nodes: the driver starts the ranks on the workers with TorchDistributor (runners/distributed/spark.py).
    cmd, args = command(config, work, out, options.aggregate, launch_flags(options, cluster="spark"))
    env = base_env("", keyring)
    del env["TGFLOW_PASSPHRASE_FILE"]
    env["TGFLOW_PASSPHRASE"] = f"{{{{secrets/{scope}/{key}}}}}"
    gpu = options.gpus > 0
    cluster = {
        "spark_version": s("spark_version", default="15.4.x-gpu-ml-scala2.12" if gpu else "15.4.x-scala2.12"),
        "node_type_id": s("node_type_id", default="g5.2xlarge" if gpu else "m5d.2xlarge"),
        **_workers(options),
        "custom_tags": {"tgflow-route": spec.route_key,
                        **({} if options.nodes > 1 else {"ResourceClass": "SingleNode"})},
        "docker_image": {"url": options.image},
        "spark_env_vars": env,
    }
    job: dict[str, Any] = {
        "name": name,
        "max_concurrent_runs": 1,  # rounds of one route must not overlap on its state
        "timeout_seconds": options.timeout_minutes * 60,
        "tags": {"tgflow-route": spec.route_key},
        "tasks": [{
            "task_key": _TASK_KEY,
            "new_cluster": cluster,
            "python_wheel_task": {"package_name": "tgflow", "entry_point": cmd[0], "parameters": args},
            "max_retries": options.retries,
            "min_retry_interval_millis": 60_000,
            "retry_on_timeout": False,
            "timeout_seconds": options.timeout_minutes * 60,
        }],
    }
    native = None
    if options.schedule:
        native = cron.to_quartz(cron.parse(options.schedule))
        job["schedule"] = {"quartz_cron_expression": native, "timezone_id": options.settings.get("time_zone", "UTC"),
                           "pause_status": "UNPAUSED"}
    return {
        "job.json": job,
        "job_spec.json": portable(
            spec, options, name=name, cmd=cmd, args=args, env=env, schedule=native,
            secrets=[{"name": "passphrase", "env": "TGFLOW_PASSPHRASE", "ref": env["TGFLOW_PASSPHRASE"]}],
            inputs=[{"name": "config", "mount": config}, {"name": "work", "mount": work, "read_only": True},
                    {"name": "keyring", "mount": keyring, "read_only": True}],
            outputs=[{"name": "out", "mount": out}]),
    }


def _workers(options: ExportOptions) -> dict[str, Any]:
    """One node: a single-node cluster. Several: that many workers, and with GPUs one Spark
    task per worker holding all its GPUs (TorchDistributor runs one torchrun per task)."""
    if options.nodes == 1:
        return {"num_workers": 0,
                "spark_conf": {"spark.databricks.cluster.profile": "singleNode", "spark.master": "local[*]"}}
    conf = {"spark.task.resource.gpu.amount": str(options.gpus),
            "spark.executor.resource.gpu.amount": str(options.gpus)} if options.gpus else {}
    return {"num_workers": options.nodes, **({"spark_conf": conf} if conf else {})}


_QUARTZ = re.compile(r"^0 \S+ \S+ \S+ \S+ \S+$")


def check(files: dict[str, Any]) -> list[str]:
    from databricks.bundles.jobs import Job

    job = files["job.json"]
    parsed = Job.from_dict(job)
    if parsed.as_dict() != job:
        raise ValueError("databricks-bundles dropped or changed fields of job.json")
    done = ["job.json: databricks-bundles Job.from_dict (strict, round-trips)"]
    sched = job.get("schedule")
    if sched:
        expr = sched["quartz_cron_expression"]
        fields = expr.split()
        if not _QUARTZ.match(expr) or [fields[3], fields[5]].count("?") != 1:
            raise ValueError(f"job.json: {expr!r} is not a Quartz cron with exactly one '?' day field")
        done.append("job.json: Quartz cron syntax")
    task = job["tasks"][0]
    env = task["new_cluster"]["spark_env_vars"]
    if not re.fullmatch(r"\{\{secrets/[\w.-]+/[\w.-]+\}\}", env.get("TGFLOW_PASSPHRASE", "")):
        raise ValueError("job.json: the passphrase must be a {{secrets/scope/key}} reference")
    done.append("job.json: passphrase is a secret-scope reference")
    return done
