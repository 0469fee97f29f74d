"""`tgflow export --nodes N --procs-per-node P`: every backend's own multi-node setting,
validated with the platform's models (Kubeflow Trainer's TrainJob and JobSet, the Training
Operator's PyTorchJob, botocore, Vertex's protobufs, azure-ai-ml, databricks-bundles), and
each exported command line parsed by the real CLI after the platform fills in its $(VAR)s."""

from __future__ import annotations

import copy
import os
import re
import shutil
from pathlib import Path

import pytest

from runners import export as ex
from runners.export.jobspec import Aggregation, ExportOptions
from runners.spec import load_spec
from tests.edges.test_export_edges import _command_lines, expand_platform_vars, parse_with_the_real_cli
from tests.export.test_export import IMPLEMENTED, SETTINGS, assert_golden
from tgflow_cli.main import main
from tgsp.errors import InputError

ROOT = Path(__file__).resolve().parents[2]
GOLDEN = Path(__file__).parent / "golden"
SPEC, _, _ = load_spec(ROOT / "examples" / "run_spec.json")
ENGINES = ["trainjob", "jobset", "legacy-pytorchjob"]
def options(backend: str, **over) -> ExportOptions:
    settings = dict(SETTINGS[backend], **over.pop("settings", {}))
    if backend == "sagemaker":
        settings.setdefault("instance_type", "ml.g5.12xlarge")
    kw = dict(image="registry.example/tgflow:0.1.0", nodes=2, procs_per_node=4, gpus=4,
              schedule=None if backend == "k8s" else "0 3 * * *", settings=settings)
    kw.update(over)
    return ExportOptions(**kw)


def _argvs(files: dict) -> list[list[str]]:
    return [expand_platform_vars(a) for name, doc in files.items() if name != "run_spec.json" for a in _command_lines(doc)]


NODES = {  # where each backend says how many nodes and processes
    "sagemaker": lambda f: (f["training_job.json"]["ResourceConfig"]["InstanceCount"], None),
    "vertex": lambda f: ([int(p["replicaCount"]) for p in f["custom_job.json"]["jobSpec"]["workerPoolSpecs"]], None),
    "azureml": lambda f: (f["job.yaml"]["resources"]["instance_count"],
                          f["job.yaml"]["distribution"]["process_count_per_instance"]),
    "databricks": lambda f: (f["job.json"]["tasks"][0]["new_cluster"]["num_workers"],
                             f["job.json"]["tasks"][0]["new_cluster"]["spark_conf"]["spark.task.resource.gpu.amount"]),
}


@pytest.mark.parametrize("backend", [b for b in IMPLEMENTED if b != "k8s"])
def test_every_platform_scales_out_with_its_own_setting(backend):
    files = ex.export(SPEC, backend, options(backend))
    assert ex.check(backend, files)
    assert NODES[backend](files) == {"sagemaker": (2, None), "vertex": ([1, 1], None), "azureml": (2, 4),
                                     "databricks": (2, "4")}[backend]
    assert files["job_spec.json"]["scale"] == {"nodes": 2, "procs_per_node": 4}
    argvs = _argvs(files)
    assert argvs
    for argv in argvs:
        params = parse_with_the_real_cli(argv)
        if backend == "azureml":  # Azure ML starts the 4 processes per node itself, each one rank
            assert params["nproc_per_node"] == 1 and params["cluster"] is None
        else:
            cluster = {"sagemaker": "sagemaker", "vertex": "vertex", "databricks": "spark"}[backend]
            assert (params["nproc_per_node"], params["nnodes"], params["cluster"].value) == (4, 2, cluster)


@pytest.mark.parametrize("engine", ENGINES)
def test_k8s_engines_validate_and_carry_the_rendezvous(engine):
    files = ex.export(SPEC, "k8s", options("k8s", settings={"engine": engine}))
    checked = ex.check("k8s", files)
    name = {"trainjob": "trainjob.yaml", "jobset": "jobset.yaml", "legacy-pytorchjob": "pytorchjob.yaml"}[engine]
    assert "job.yaml" not in files and any(c.startswith(f"{name}: ") for c in checked)
    doc = files[name]
    if engine == "trainjob":
        t = doc["spec"]["trainer"]
        assert (t["numNodes"], t["numProcPerNode"], doc["spec"]["runtimeRef"]["name"]) == (2, 4, "torch-distributed")
        assert t["resourcesPerNode"]["limits"]["nvidia.com/gpu"] == "4"
    elif engine == "jobset":
        job = doc["spec"]["replicatedJobs"][0]["template"]["spec"]
        assert (job["completions"], job["parallelism"], job["completionMode"]) == (2, 2, "Indexed")
        assert doc["spec"]["failurePolicy"]["maxRestarts"] == 3
    else:
        replicas = doc["spec"]["pytorchReplicaSpecs"]
        assert (replicas["Master"]["replicas"], replicas["Worker"]["replicas"], doc["spec"]["nprocPerNode"]) == (1, 1, "4")
    for argv in _argvs(files):
        params = parse_with_the_real_cli(argv)
        assert (params["nproc_per_node"], params["nnodes"], params["node_rank"]) == (4, 2, 1)
        assert params["master_addr"] and 0 < params["master_port"] < 65536


@pytest.mark.parametrize("engine", ENGINES)
def test_k8s_engine_validators_reject_an_unknown_field(engine):
    files = copy.deepcopy(ex.export(SPEC, "k8s", options("k8s", settings={"engine": engine})))
    name = next(n for n in files if n in ("trainjob.yaml", "jobset.yaml", "pytorchjob.yaml"))
    files[name]["spec"]["unknownFieldXyz"] = 1
    with pytest.raises(ValueError, match="unknownFieldXyz"):
        ex.check("k8s", files)


def test_one_node_with_several_processes_needs_no_rendezvous():
    files = ex.export(SPEC, "sagemaker", options("sagemaker", nodes=1))
    assert files["training_job.json"]["ResourceConfig"]["InstanceCount"] == 1
    params = parse_with_the_real_cli(files["job_spec.json"]["args"])
    assert (params["nproc_per_node"], params["nnodes"], params["cluster"]) == (4, None, None)
    single = ex.export(SPEC, "vertex", options("vertex", nodes=1, procs_per_node=1, gpus=1))
    assert "--nproc-per-node" not in single["job_spec.json"]["args"]  # unchanged from a one-process export


@pytest.mark.parametrize("over, message", [
    (dict(settings={"engine": "mpi"}), "is not one of trainjob, jobset, legacy-pytorchjob"),
    (dict(gpus=2), "each process trains on one GPU"),
    (dict(aggregate=Aggregation(quorum=2)), "runs in one process"),
])
def test_bad_scale_out_setups_are_refused_in_one_line(over, message):
    spec = SPEC
    if "aggregate" in over:
        spec, _, _ = load_spec(ROOT / "examples" / "fed_aggregator.json")
    with pytest.raises(InputError, match=message) as info:
        ex.export(spec, "k8s", options("k8s", **over))
    assert "\n" not in str(info.value)


def test_sagemaker_wants_an_instance_type_for_several_gpus():
    opts = options("sagemaker")
    del opts.settings["instance_type"]
    with pytest.raises(InputError, match="name an instance type with that many GPUs"):
        ex.export(SPEC, "sagemaker", opts)


@pytest.mark.parametrize("engine, schedule", [("trainjob", None), ("jobset", None), ("trainjob", "0 3 * * *")])
def test_k8s_scale_out_golden_files(engine, schedule):
    """Read line by line when regenerated: TGFLOW_REGEN_GOLDEN=1 pytest tests/export -k golden"""
    files = ex.export(SPEC, "k8s", options("k8s", nodes=2, procs_per_node=2, gpus=2, schedule=schedule,
                                           settings={"engine": engine}))
    assert_golden(files, GOLDEN / f"k8s-{engine}{'-scheduled' if schedule else ''}")


def test_cli_exports_checks_and_warns_about_the_legacy_engine(tmp_path, capsys):
    args = ["export", "--backend", "k8s", "--spec", str(ROOT / "examples" / "run_spec.json"), "--nodes", "2",
            "--procs-per-node", "2", "--gpus", "2", "--check"]
    assert main([*args, "-o", str(tmp_path / "a")]) == 0
    assert (tmp_path / "a" / "trainjob.yaml").is_file() and not (tmp_path / "a" / "job.yaml").exists()
    capsys.readouterr()
    assert main([*args, "--set", "engine=legacy-pytorchjob", "-o", str(tmp_path / "b")]) == 0
    assert "PyTorchJob (kubeflow.org/v1) is deprecated" in capsys.readouterr().err
    assert main([*args, "--aggregate", "--quorum", "2", "-o", str(tmp_path / "c")]) == 2


def test_the_scaling_out_examples_run_as_written(tmp_path):
    """docs/export.md#scaling-out: its example block, literally, with tgflow on the PATH."""
    import subprocess
    import sys

    text = (ROOT / "docs" / "export.md").read_text()
    section = text.split("## Scaling out\n", 1)[1].split("\n## ", 1)[0]
    [block] = re.findall(r"```bash\n(.*?)```", section, flags=re.S)
    assert block.count("tgflow export --backend") == 6
    shutil.copytree(ROOT / "examples", tmp_path / "examples", ignore=shutil.ignore_patterns("demo-out"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("TGFLOW_")}
    env.update(HOME=str(tmp_path), PATH=f"{Path(sys.executable).parent}:{env.get('PATH', '')}")
    proc = subprocess.run(["bash", "-c", "set -euo pipefail\n" + block], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    for folder, native in (("dist-k8s", "trainjob.yaml"), ("dist-jobset", "jobset.yaml"),
                           ("dist-sm", "training_job.json"), ("dist-vertex", "custom_job.json"),
                           ("dist-aml", "job.yaml"), ("dist-dbx", "job.json")):
        assert (tmp_path / folder / native).is_file()
    assert proc.stderr.count("checked ") >= 6


@pytest.mark.parametrize("engine", ENGINES)
def test_a_scheduled_k8s_scale_out_launches_the_exported_document(engine):
    """A CronJob can only create Jobs: it runs kubectl create of the engine's document, as a
    ServiceAccount that may create that one resource and nothing else."""
    import yaml

    files = ex.export(SPEC, "k8s", options("k8s", schedule="0 3 * * MON-FRI", settings={"engine": engine}))
    checked = ex.check("k8s", files)
    assert any("launches" in c for c in checked)
    cron = files["cronjob.yaml"]["spec"]
    assert (cron["schedule"], cron["concurrencyPolicy"]) == ("0 3 * * 1-5", "Forbid")
    pod = cron["jobTemplate"]["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == "tgflow-support-launcher"
    assert pod["containers"][0]["args"][:2] == ["create", "-f"]  # create: generateName needs it (apply does not)
    [data] = files["launcher-configmap.yaml"]["data"].values()
    assert yaml.safe_load(data)["metadata"]["generateName"] == "tgflow-support-"
    assert files["launcher-role.yaml"]["rules"][0]["verbs"] == ["create"]
    tampered = copy.deepcopy(files)
    tampered["launcher-role.yaml"]["rules"][0]["verbs"].append("delete")
    with pytest.raises(ValueError, match="may only create"):
        ex.check("k8s", tampered)
    tampered = copy.deepcopy(files)
    name = next(iter(files["launcher-configmap.yaml"]["data"]))
    tampered["launcher-configmap.yaml"]["data"][name] = data.replace("--skip-ok", "--pretty")
    with pytest.raises(ValueError, match="is not the exported one"):
        ex.check("k8s", tampered)


def test_a_scaled_out_k8s_name_leaves_room_for_the_pod_hostnames():
    with pytest.raises(InputError, match="at most 47"):
        ex.export(SPEC, "k8s", options("k8s", name="r" * 48))
