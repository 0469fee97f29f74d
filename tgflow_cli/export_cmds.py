"""tgflow export: the run spec as native job definitions for other platforms."""

from __future__ import annotations

import difflib
import os
from pathlib import Path
from typing import List, Optional

import typer

from tgsp.errors import InputError

from .common import config, emit_json
from .stdio import no_dash
from .term import say, warn


BACKENDS = ("k8s", "sagemaker", "vertex", "azureml", "databricks")
# What users type for a platform tgflow reaches through one of its backends.
_ALIASES = {"kubernetes": "k8s", "kube": "k8s", "kubeflow": "k8s", "trainjob": "k8s", "jobset": "k8s",
            "pytorchjob": "k8s", "aws": "sagemaker", "gcp": "vertex", "vertex-ai": "vertex", "vertexai": "vertex",
            "azure": "azureml", "azure-ml": "azureml", "spark": "databricks"}


def _backend(value: str) -> str:
    if value in BACKENDS:
        return value
    alias = _ALIASES.get(value.lower())
    near = alias or next(iter(difflib.get_close_matches(value.lower(), BACKENDS, n=1)), None)
    raise InputError(f"--backend {value!r} is not one of {', '.join(BACKENDS)}"
                     + (f"; did you mean {near}?" if near else ""),
                     hint="Kubeflow Trainer, JobSet and PyTorchJob are --backend k8s (--nodes N, --set engine=...)"
                     if alias == "k8s" else "see: tgflow export --help")


def _check_aggregate(aggregate: bool, quorum: int | None, decrypt_from: str | None) -> None:
    if decrypt_from and not aggregate:
        raise InputError("--decrypt-from goes with --aggregate --quorum K", hint="the key holder's job needs its quorum")
    if aggregate != (quorum is not None):
        raise InputError("--aggregate and --quorum go together",
                         hint="an aggregation job needs its quorum: --aggregate --quorum K")


def _serving(backend: str, engine: str | None, image: str | None, registry: str | None):
    """--serve ENGINE [--serve-image IMAGE] [--registry oci://HOST/REPO], or None for a round's job."""
    if engine is None:
        for flag, value in (("--serve-image", image), ("--registry", registry)):
            if value is not None:
                raise InputError(f"{flag} goes with --serve vllm", hint="tgflow export --backend k8s --serve vllm ...")
        return None
    from runners.export.serve import DEFAULT_IMAGE, Serving, refuse_backend

    serving = Serving(engine, image or DEFAULT_IMAGE, registry)
    refuse_backend(backend, serving)  # before the spec is read: the one thing wrong is the backend
    return serving


Serve = typer.Option(None, "--serve", metavar="vllm", help="With --backend k8s: instead of a round, a Deployment and Service that serve the route's production adapter with this engine, fed by tgflow route materialize (docs/export.md#serving-the-production-adapter-with-vllm).")
ServeImage = typer.Option(None, "--serve-image", metavar="IMAGE", help="With --serve: the engine's image (default vllm/vllm-openai:v0.11.0).")
ServeRegistry = typer.Option(None, "--registry", metavar="oci://HOST/REPO", help="With --serve: the registry to serve from (default: the spec's output registry, on the state claim).")


def _report(backend: str, paths: list, checked: list[str], json_out: bool) -> None:
    if json_out:
        return emit_json({"backend": backend, "files": [str(p) for p in paths], "checked": checked})
    for p in paths:
        say(f"wrote {p}")
    for c in checked:
        warn(f"checked {c}")


def _settings(items: list[str]) -> dict[str, str]:
    settings = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise InputError(f"--set {item!r} must be KEY=VALUE")
        settings[key] = value
    return settings


def export(
    backend: str = typer.Option(..., "--backend", metavar="|".join(BACKENDS), help="Target platform.",
                                autocompletion=lambda: list(BACKENDS)),
    spec: Path = typer.Option(..., "--spec", help="The run spec (the same one `peft run` takes)."),
    output: Path = typer.Option(..., "-o", "--output", help="Folder to write the job files into.", file_okay=False),
    schedule: Optional[str] = typer.Option(None, "--schedule", help="5-field unix cron, e.g. '0 3 * * *'; translated to the platform's dialect."),
    image: Optional[str] = typer.Option(None, "--image", help="Runner image (default $TGFLOW_IMAGE or the release image)."),
    name: Optional[str] = typer.Option(None, "--name", help="Job name (DNS-1123; default tgflow-<route>)."),
    gpus: int = typer.Option(0, "--gpus", min=0, help="GPUs per run."),
    cpu: str = typer.Option("2", "--cpu", help="CPU request."),
    memory: str = typer.Option("8Gi", "--memory", help="Memory request."),
    timeout_minutes: int = typer.Option(240, "--timeout-minutes", min=1, help="Hard time limit per run."),
    nodes: int = typer.Option(1, "--nodes", min=1, max=4096, help="Machines per round: torchrun's nodes, on the platform's own multi-node setting (docs/export.md#scaling-out)."),
    procs_per_node: int = typer.Option(1, "--procs-per-node", min=1, max=64, help="Training processes per machine (one per GPU; --gpus, if given, must match)."),
    set_: Optional[List[str]] = typer.Option(None, "--set", help="Backend setting KEY=VALUE (see docs/export.md). Repeatable."),
    aggregate: bool = typer.Option(False, "--aggregate", help="Export the aggregator's job (tgflow fed aggregate) for a federated spec, instead of a round."),
    quorum: Optional[int] = typer.Option(None, "--quorum", min=1, help="With --aggregate: fewest valid updates to aggregate."),
    updates: str = typer.Option("updates", "--updates", metavar="DIR", help="With --aggregate: the folder under the job's input root where the sites' updates arrive."),
    decrypt_from: Optional[str] = typer.Option(None, "--decrypt-from", metavar="KEY", help="With --aggregate, for an n2he key holder's spec: export its job (tgflow fed decrypt) on the sum signed by this aggregator key."),
    sum_path: str = typer.Option("sum.tgsp", "--sum", metavar="FILE", help="With --decrypt-from: where the aggregator's sum arrives, under the job's input root."),
    serve: Optional[str] = Serve, serve_image: Optional[str] = ServeImage, registry: Optional[str] = ServeRegistry,
    check: bool = typer.Option(False, "--check", help="Validate with the platform's offline validator and our own checks."),
    force: bool = typer.Option(False, "--force", help="Write into a non-empty folder: replace an earlier export's files and remove its stale ones."),
    json_out: bool = typer.Option(False, "--json", help="Print what was written (and checked) as JSON."),
) -> None:
    """Turn a run spec into native, validated job definitions (no network, no credentials).

    Example: tgflow export --backend k8s --spec examples/run_spec.json -o k8s/ --schedule '0 3 * * *' --check

    Federated: tgflow export --backend k8s --spec examples/fed_aggregator.json --aggregate --quorum 2 -o k8s-agg/ --schedule '0 5 * * *' --check

    Scaled out: tgflow export --backend k8s --spec examples/run_spec.json --nodes 2 --procs-per-node 4 --gpus 4 -o k8s-dist/ --check

    n2he key holder: tgflow export --backend k8s --spec examples/n2he_keyholder.json --aggregate --quorum 2 --decrypt-from aggregator-sign -o k8s-kh/ --check

    Serving: tgflow export --backend k8s --serve vllm --spec examples/run_spec.json -o k8s-serve/ --gpus 1 --check
    """
    no_dash(output, "a folder of job files")
    backend = _backend(backend)
    from runners import export as ex
    from runners.export.jobspec import DEFAULT_IMAGE, Aggregation, ExportOptions
    from runners.spec import load_spec

    settings = _settings(set_ or [])
    _check_aggregate(aggregate, quorum, decrypt_from)
    serving = _serving(backend, serve, serve_image, registry)
    run_spec, _, _ = load_spec(spec)
    image = image or os.environ.get("TGFLOW_IMAGE") or config().get("export", "image") or DEFAULT_IMAGE
    options = ExportOptions(image=image, schedule=schedule,
                            name=name, gpus=gpus, cpu=cpu, memory=memory, timeout_minutes=timeout_minutes,
                            settings=settings, nodes=nodes, procs_per_node=procs_per_node,
                            aggregate=Aggregation(quorum, updates, decrypt_from, sum_path) if aggregate else None)
    held = config().get("keys", "passphrase_file")  # never written out, wherever this machine keeps it
    files = ex.export(run_spec, backend, options, passphrase_files=[held] if held else [], serving=serving)
    if "pytorchjob.yaml" in files:
        warn("PyTorchJob (kubeflow.org/v1) is deprecated upstream: prefer the default TrainJob (Kubeflow Trainer v2)")
    checked = ex.check(backend, files) if check else []
    _report(backend, ex.write(files, output, force=force), checked, json_out)
