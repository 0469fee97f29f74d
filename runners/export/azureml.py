"""Azure Machine Learning: a command job YAML, and with --schedule a schedule YAML.

Inputs are uri_folder data assets mounted read-only (config, work, keyring);
the output folder is mounted read-write and holds packages and route state,
so a re-run resumes. The passphrase is a Key Vault secret URL in
TGFLOW_PASSPHRASE_SECRET, read at start-up with the compute's managed identity.
"""

from __future__ import annotations

import re
import tempfile
from pathlib import Path
from typing import Any

from tgsp.errors import InputError

from ..spec import RunSpec
from . import cron, jobspec
from .jobspec import ExportOptions, base_env, check_paths, job_name, portable, render

_KV = re.compile(r"^https://[a-z0-9-]+\.vault\.azure\.net/secrets/[A-Za-z0-9-]+(/[0-9a-f]{32})?$")
_BINDING = re.compile(r"\$\{\{\s*(inputs|outputs)\.([A-Za-z_][A-Za-z0-9_]*)\s*\}\}")


# Every --set KEY this backend reads; anything else is refused (a typo would be ignored).
SETTINGS = frozenset({'compute', 'config_uri', 'keyring_uri', 'out_uri', 'passphrase_secret_ref', 'time_zone', 'work_uri'})

def export(spec: RunSpec, options: ExportOptions) -> dict[str, Any]:
    check_paths(spec)
    s = lambda key, **kw: options.setting(key, "azureml", **kw)  # noqa: E731
    name = job_name(spec, options, max_len=63)
    secret = s("passphrase_secret_ref")
    if not _KV.match(secret):
        raise InputError("--set passphrase_secret_ref must be https://<vault>.vault.azure.net/secrets/<name>[/<version>]")
    env = base_env("", "${{inputs.keyring}}")
    del env["TGFLOW_PASSPHRASE_FILE"], env["TGFLOW_HOME"]  # TGFLOW_HOME is bound in the command
    env["TGFLOW_PASSPHRASE_SECRET"] = secret
    work, out = s("work_uri"), s("out_uri")
    config = s("config_uri", default=work.rstrip("/") + "/config")
    keyring = s("keyring_uri", default=work.rstrip("/") + "/keyring")
    # The same command as every backend; Azure ML substitutes ${{...}} before the shell runs it.
    exe, argv = jobspec.command("${{inputs.config}}", "${{inputs.work}}", "${{outputs.out}}", options.aggregate)
    command = "TGFLOW_HOME=${{inputs.keyring}} " + " ".join(exe + argv)
    job: dict[str, Any] = {
        "$schema": "https://azuremlschemas.azureedge.net/latest/commandJob.schema.json",
        "type": "command",
        "display_name": name,
        "experiment_name": name,
        "description": f"tgflow continuous-learning round for route {spec.route_key}",
        "tags": {"tgflow-route": spec.route_key},
        "command": command,
        "environment": {"image": options.image},
        "compute": s("compute"),
        "identity": {"type": "managed"},
        "inputs": {
            "config": {"type": "uri_folder", "path": config, "mode": "ro_mount"},
            "work": {"type": "uri_folder", "path": work, "mode": "ro_mount"},
            "keyring": {"type": "uri_folder", "path": keyring, "mode": "ro_mount"},
        },
        "outputs": {"out": {"type": "uri_folder", "path": out, "mode": "rw_mount"}},
        "environment_variables": env,
        "resources": {"instance_count": options.nodes},
        "limits": {"timeout": options.timeout_minutes * 60},
    }
    if options.distributed:  # Azure ML starts the processes and sets RANK, WORLD_SIZE, MASTER_ADDR: one rank each
        job["distribution"] = {"type": "pytorch", "process_count_per_instance": options.procs_per_node}
    files: dict[str, Any] = {"job.yaml": job}
    native = None
    if options.schedule:
        native = cron.to_unix(cron.parse(options.schedule))
        files["schedule.yaml"] = {
            "$schema": "https://azuremlschemas.azureedge.net/latest/schedule.schema.json",
            "name": name,
            "display_name": f"{name} schedule",
            "trigger": {"type": "cron", "expression": native, "time_zone": options.settings.get("time_zone", "UTC")},
            "create_job": "./job.yaml",
        }
    files["job_spec.json"] = portable(
        spec, options, name=name, cmd=["tgflow"], args=command.split()[2:], env=env, schedule=native,
        secrets=[{"name": "passphrase", "env": "TGFLOW_PASSPHRASE_SECRET", "ref": secret}],
        inputs=[{"name": k, "ref": v["path"], "read_only": True} for k, v in job["inputs"].items()],
        outputs=[{"name": "out", "ref": out}])
    return files


def check(files: dict[str, Any]) -> list[str]:
    from azure.ai.ml import load_job
    from azure.ai.ml.entities._load_functions import load_schedule

    job = files["job.yaml"]
    for kind, name in _BINDING.findall(job["command"]):
        if name not in job.get(kind, {}):
            raise ValueError(f"job.yaml: the command uses ${{{{{kind}.{name}}}}}, which job.yaml does not define")
    done = ["job.yaml: every ${{inputs.x}} / ${{outputs.x}} in the command is defined"]
    with tempfile.TemporaryDirectory() as tmp:
        for name in ("job.yaml", "schedule.yaml"):
            if name in files:
                (Path(tmp) / name).write_bytes(render(name, files[name]))
        loaded = load_job(Path(tmp) / "job.yaml")
        done.append("job.yaml: azure-ai-ml load_job")
        _check_scale(job, loaded)
        if "schedule.yaml" in files:
            cron.parse(files["schedule.yaml"]["trigger"]["expression"])
            load_schedule(Path(tmp) / "schedule.yaml")
            done.append("schedule.yaml: azure-ai-ml load_schedule (with job.yaml), unix cron")
    return done


def _check_scale(job: dict[str, Any], loaded) -> None:
    """What the loaded job will run on: the SDK must have read our node and process counts."""
    want = job.get("distribution")
    got = loaded.distribution
    if want and (got is None or got.type != "pytorch"
                 or got.process_count_per_instance != want["process_count_per_instance"]):
        raise ValueError("job.yaml: azure-ai-ml did not read the pytorch distribution as written")
    if loaded.resources.instance_count != job["resources"]["instance_count"]:
        raise ValueError("job.yaml: azure-ai-ml did not read resources.instance_count as written")
