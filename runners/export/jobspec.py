"""The portable job spec every backend shares, and the options that shape it.

Every backend runs the same container command:

    tgflow peft run --spec <config>/run_spec.json --input-root <in> --output-root <out> --skip-ok --wait-busy 900 --json

with the keyring at TGFLOW_HOME and the passphrase in a file whose path is in
TGFLOW_PASSPHRASE_FILE. Both come from the platform's secret store, by
reference. Nothing here touches the network or the filesystem.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Any

from tgsp.errors import InputError

from .. import outcomes
from ..spec import RunSpec

DEFAULT_IMAGE = "ghcr.io/tgflow/tgflow:0.1.0"
JOB_SPEC_FORMAT = "tgflow.job-spec/1"
_SAFE_DIR = re.compile(r"^[A-Za-z0-9._-]+(/[A-Za-z0-9._-]+)*$")
_DNS1123 = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
# peft run's exit codes, for platforms that can act on them.
# Runs use --skip-ok, so "nothing new" (10) is a successful, quiet night (0).
# A job that finds its route busy retries the lock itself for this long (platforms that cannot
# retry on an exit code still retry a busy route), then exits 73, which k8s retries too.
BUSY_WAIT_SECONDS = 900
RETRY_CODES = outcomes.retry_codes()  # busy, interrupted (checkpoint saved), terminated: run again
FINAL_CODES = outcomes.final_codes()  # retrying cannot help


@dataclass(frozen=True)
class Aggregation:
    """Export the aggregator's job (``tgflow fed aggregate``) instead of a round's; with
    ``decrypt_from`` (n2he), the key holder's (``tgflow fed decrypt``) on the aggregator's sum."""

    quorum: int
    updates: str = "updates"  # the folder under the input root where the sites' updates arrive
    decrypt_from: str | None = None  # n2he key holder: the aggregator's signing key
    sum: str = "sum.tgsp"  # n2he key holder: where the aggregator's sum arrives, under the input root

    @property
    def step(self) -> str:
        return "decrypt" if self.decrypt_from else "aggregate"


@dataclass(frozen=True)
class ExportOptions:
    image: str = DEFAULT_IMAGE
    schedule: str | None = None  # 5-field unix cron (see cron.py)
    name: str | None = None  # default: tgflow-<route>
    gpus: int = 0
    cpu: str = "2"
    memory: str = "8Gi"
    timeout_minutes: int = 240
    grace_seconds: int = 300
    retries: int = 3
    settings: dict[str, str] = field(default_factory=dict)  # backend-specific (--set KEY=VALUE)
    aggregate: Aggregation | None = None
    nodes: int = 1  # --nodes: machines per round (each backend's own multi-node setting)
    procs_per_node: int = 1  # --procs-per-node: training processes per machine (one per GPU)

    @property
    def distributed(self) -> bool:
        return self.nodes * self.procs_per_node > 1

    def final_codes(self) -> tuple[int, ...]:
        """Exit codes a retry cannot help; an aggregation's missed quorum (14) is one of them."""
        return FINAL_CODES + ((outcomes.code("quorum-not-met"),) if self.aggregate else ())

    def setting(self, key: str, backend: str, *, default: str | None = None) -> str:
        value = self.settings.get(key, default)
        if value is None:
            raise InputError(f"the {backend} backend needs --set {key}=...", hint=f"see docs/export.md#{backend}")
        return value


def dns1123(text: str, *, max_len: int = 63, what: str = "name") -> str:
    if len(text) > max_len or not _DNS1123.match(text):
        raise InputError(f"{what} {text!r} is not a valid DNS-1123 label (lowercase a-z, 0-9, '-', at most {max_len})",
                         hint="pass --name with a valid name")
    return text


def job_name(spec: RunSpec, options: ExportOptions, *, max_len: int = 52) -> str:
    if options.name:
        return dns1123(options.name, max_len=max_len, what="--name")
    suffix = f"-{options.aggregate.step}" if options.aggregate else ""
    derived = re.sub(r"[^a-z0-9-]+", "-", f"tgflow-{spec.route_key}".lower()).strip("-")[:max_len - len(suffix)]
    derived = derived.rstrip("-") + suffix
    return dns1123(derived, max_len=max_len)


def check_updates_dir(value: str, flag: str = "--updates", example: str = "updates") -> None:
    """A path under the job's input root (``flag`` names the option it came from)."""
    path = PurePosixPath(value)
    if not _SAFE_DIR.match(value) or path.is_absolute() or ".." in path.parts:
        raise InputError(f"{flag} {value!r} must be a path inside the job's input root (letters, digits, . _ - /)",
                         hint=f"e.g. {flag} {example}")


def check_paths(spec: RunSpec) -> None:
    """Inputs must live under the input root in a container: no '..' escapes."""
    refs = [("base_model_ref", spec.base_model_ref)]
    for name in ("feed", "reference", "eval"):
        feed = getattr(spec, name)
        if feed is not None and feed.type != "hf":
            refs.append((f"{name}.uri", feed.uri))
    for where, value in refs:
        if ".." in PurePosixPath(value).parts:
            raise InputError(f"run spec {where} {value!r} leaves the input folder; in a container every input lives "
                             "under --input-root", hint="use a path inside the spec's folder, or an absolute container path")
    state_dir = spec.output.state_dir  # the route's state and DP ledger belong on the mounted output volume
    if state_dir and ".." in PurePosixPath(state_dir).parts:
        raise InputError(f"run spec output.state_dir {state_dir!r} leaves the output folder; in a container it would "
                         "land outside --output-root", hint="use a folder inside the output folder")


def check_scale(options: ExportOptions) -> None:
    """--nodes and --procs-per-node scale a training round; aggregation is one process."""
    if options.nodes < 1 or options.procs_per_node < 1:
        raise InputError("--nodes and --procs-per-node must be at least 1")
    if options.distributed and options.aggregate is not None:
        raise InputError(f"--nodes/--procs-per-node scale a training round: `tgflow fed {options.aggregate.step}` "
                         "runs in one process", hint="drop --nodes/--procs-per-node from the aggregation export")
    if options.distributed and options.gpus and options.gpus != options.procs_per_node:
        raise InputError(f"--gpus {options.gpus} per node with --procs-per-node {options.procs_per_node}: each process "
                         "trains on one GPU", hint=f"pass --gpus {options.procs_per_node} (or leave --gpus out)")


def launch_flags(options: ExportOptions, **rendezvous: str) -> list[str]:
    """``peft run``'s launcher flags (runners/distributed/launch.py): processes on this node, and for several
    nodes either the platform's cluster description (cluster="sagemaker") or explicit
    node_rank / master_addr / master_port, often $(VAR) references the platform fills in."""
    if not options.distributed:
        return []
    flags = ["--nproc-per-node", str(options.procs_per_node)]
    if options.nodes > 1:
        flags += ["--nnodes", str(options.nodes)]
        for key, value in rendezvous.items():
            flags += [f"--{key.replace('_', '-')}", value]
    return flags


def command(config_dir: str, input_root: str, output_root: str,
            aggregate: Aggregation | None = None, launch: list[str] | tuple[str, ...] = ()) -> tuple[list[str], list[str]]:
    roots = ["--input-root", input_root, "--output-root", output_root]
    if aggregate is not None and aggregate.decrypt_from:  # the n2he key holder: the sum, and the updates it lists
        return ["tgflow"], ["fed", "decrypt", f"{input_root}/{aggregate.sum}", "--updates-dir",
                            f"{input_root}/{aggregate.updates}", "--aggregator", aggregate.decrypt_from, "--spec",
                            f"{config_dir}/run_spec.json", "--quorum", str(aggregate.quorum), *roots, "--wait-busy",
                            str(BUSY_WAIT_SECONDS), "--json"]
    if aggregate is not None:  # the aggregator: every update in the folder, this round's quorum
        return ["tgflow"], ["fed", "aggregate", "--updates-dir", f"{input_root}/{aggregate.updates}", "--spec",
                            f"{config_dir}/run_spec.json", "--quorum", str(aggregate.quorum), *roots, "--wait-busy",
                            str(BUSY_WAIT_SECONDS), "--json"]
    return ["tgflow"], ["peft", "run", *launch, "--spec", f"{config_dir}/run_spec.json", *roots, "--skip-ok", "--wait-busy",
                        str(BUSY_WAIT_SECONDS), "--json"]


def base_env(passphrase_file: str, keyring_dir: str) -> dict[str, str]:
    return {
        "TGFLOW_HOME": keyring_dir,
        "TGFLOW_PASSPHRASE_FILE": passphrase_file,
        "HOME": "/tmp",
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        "PYTHONUNBUFFERED": "1",
    }


def exit_codes(aggregate: bool = False) -> dict[str, str]:
    """What each exit code of the exported command means (docs/cli.md)."""
    never = (10, 20) if aggregate else (10, 14, 20)
    return {str(o.code): o.meaning for o in outcomes.OUTCOMES if o.code not in never}


def portable(spec: RunSpec, options: ExportOptions, *, name: str, cmd: list[str], args: list[str],
             env: dict[str, str], secrets: list[dict[str, str]], inputs: list[dict[str, Any]],
             outputs: list[dict[str, Any]], schedule: str | None) -> dict[str, Any]:
    return {
        "format": JOB_SPEC_FORMAT,
        "name": name,
        "route_key": spec.route_key,
        "image": options.image,
        "command": cmd,
        "args": args,
        "env": env,
        "secrets": secrets,
        "resources": {"cpu": options.cpu, "memory": options.memory, "gpus": options.gpus},
        "scale": {"nodes": options.nodes, "procs_per_node": options.procs_per_node},
        "inputs": inputs,
        "outputs": outputs,
        "schedule": None if options.schedule is None else {"unix": options.schedule, "native": schedule},
        "timeout_minutes": options.timeout_minutes,
        "exit_codes": exit_codes(options.aggregate is not None),
    }


def render(name: str, doc: Any) -> bytes:
    """A job file's bytes: YAML for .yaml names, else canonical-ish JSON."""
    if name.endswith(".yaml"):
        import yaml

        class _NoAliases(yaml.SafeDumper):  # repeated dicts are written out, never as &anchors
            def ignore_aliases(self, data: Any) -> bool:
                return True

        return yaml.dump(doc, Dumper=_NoAliases, sort_keys=False, default_flow_style=False, width=100).encode()
    return (json.dumps(doc, indent=2, sort_keys=True) + "\n").encode()
