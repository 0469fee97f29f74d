"""Several nodes, placed by the platform's own cluster description (`peft run --cluster`):
the readers on descriptions written as SageMaker and Vertex AI write them, hostile ones
refused in one line, and real 2-node rounds on this machine: Vertex's CLUSTER_SPEC, and
Spark's TorchDistributor (a local Spark master; Databricks runs the same code)."""

from __future__ import annotations

import json
import os
import shutil
import socket
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from runners.distributed import clusters
from tests.runners.test_ddp_round import _files, _max_rel, _tgflow, _weights
from tgsp.errors import InputError


def _resourceconfig(tmp_path, current, hosts) -> dict[str, str]:
    (tmp_path / "resourceconfig.json").write_text(json.dumps(
        {"current_host": current, "hosts": hosts, "network_interface_name": "eth0"}))
    return {"TGFLOW_SAGEMAKER_CONFIG_DIR": str(tmp_path)}


def test_sagemaker_places_nodes_in_sorted_host_order(tmp_path):
    hosts = ["algo-2", "algo-1", "algo-3"]
    ranks = [clusters.placement("sagemaker", 3, _resourceconfig(tmp_path, h, hosts)).node_rank for h in hosts]
    assert ranks == [1, 0, 2]
    assert clusters.placement("sagemaker", None, _resourceconfig(tmp_path, "algo-3", hosts)).master_addr == "algo-1"
    with pytest.raises(InputError, match="the cluster has 3 nodes, but --nnodes says 2"):
        clusters.placement("sagemaker", 2, _resourceconfig(tmp_path, "algo-1", hosts))


@pytest.mark.parametrize("doc", [{"current_host": "algo-9", "hosts": ["algo-1"]}, {"hosts": ["a", "a"], "current_host": "a"},
                                 {"current_host": "a"}, [], "text", {"current_host": "a", "hosts": [1]}])
def test_sagemaker_refuses_a_broken_description(tmp_path, doc):
    (tmp_path / "resourceconfig.json").write_text(json.dumps(doc))
    with pytest.raises(InputError, match="--cluster sagemaker: .*resourceconfig.json needs distinct"):
        clusters.sagemaker({"TGFLOW_SAGEMAKER_CONFIG_DIR": str(tmp_path)})
    with pytest.raises(InputError, match="does not exist"):
        clusters.sagemaker({"TGFLOW_SAGEMAKER_CONFIG_DIR": str(tmp_path / "none")})


def _spec(kind, index, workers=1, port=2222):
    return json.dumps({"cluster": {"workerpool0": [f"cmle-training-workerpool0-0:{port}"],
                                   "workerpool1": [f"cmle-training-workerpool1-{i}:2222" for i in range(workers)]},
                       "environment": "cloud", "task": {"type": kind, "index": index}, "job": "{}"})


def test_vertex_reads_the_chief_and_the_workers():
    assert clusters.vertex({"CLUSTER_SPEC": _spec("workerpool0", 0, 3)}) == clusters.Placement(
        4, 0, "cmle-training-workerpool0-0", 2222)
    assert clusters.vertex({"CLUSTER_SPEC": _spec("workerpool1", 2, 3)}).node_rank == 3


@pytest.mark.parametrize("env", [{}, {"CLUSTER_SPEC": "{"}, {"CLUSTER_SPEC": _spec("workerpool2", 0)},
                                 {"CLUSTER_SPEC": _spec("workerpool1", 1)}, {"CLUSTER_SPEC": _spec("workerpool0", 1)},
                                 {"CLUSTER_SPEC": _spec("workerpool1", True)},
                                 {"CLUSTER_SPEC": _spec("workerpool0", 0).replace(":2222", ":99999", 1)},
                                 {"CLUSTER_SPEC": json.dumps({"cluster": {"workerpool0": ["a:1", "b:1"]},
                                                              "task": {"type": "workerpool0", "index": 0}})}])
def test_vertex_refuses_a_broken_description(env):
    with pytest.raises(InputError, match="^--cluster vertex: "):
        clusters.vertex(env)


@settings(max_examples=200, deadline=None)
@given(st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=20),
                    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
                    max_leaves=20))
def test_any_cluster_spec_is_placed_or_refused_in_one_line(doc):
    try:
        found = clusters.vertex({"CLUSTER_SPEC": json.dumps(doc)})
    except InputError as exc:
        assert "\n" not in str(exc)
    else:
        assert 0 <= found.node_rank < found.nnodes


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _node_env(cluster: str, node: int, port: int, tmp) -> dict[str, str]:
    """What the platform gives node ``node`` of 2, both on this machine."""
    if cluster == "vertex":  # Vertex may also set WORLD_SIZE/RANK for the nodes: --cluster launches regardless
        spec = {"cluster": {"workerpool0": [f"127.0.0.1:{port}"], "workerpool1": ["127.0.0.1:1"]},
                "task": {"type": f"workerpool{node}", "index": 0}, "environment": "cloud"}
        return {"CLUSTER_SPEC": json.dumps(spec), "WORLD_SIZE": "2", "RANK": str(node)}
    folder = tmp / f"node{node}"
    folder.mkdir()  # sorted hosts: "127.0.0.1" is node 0
    return _resourceconfig(folder, ["127.0.0.1", "localhost"][node], ["localhost", "127.0.0.1"])


@pytest.mark.parametrize("cluster", ["vertex", "sagemaker"])
def test_two_nodes_placed_by_the_platform_release_the_same_adapter_as_one_process(workspace, tmp_path, cluster):
    one = workspace.spec("one.json", output__path="out/one/adapter.tgsp")
    two = workspace.spec("two.json", output__path="out/two/adapter.tgsp")
    assert _tgflow(workspace, "peft", "run", "--spec", str(one)).returncode == 0
    port, procs = _free_port(), []
    for node in (0, 1):
        env = _node_env(cluster, node, port, tmp_path)
        os.environ.update(env)
        try:  # SageMaker names no port: --master-port is the exported job's (here a free one)
            procs.append(_tgflow(workspace, "peft", "run", "--spec", str(two), "--cluster", cluster, "--nnodes", "2",
                                 *(["--master-port", str(port)] if cluster == "sagemaker" else []), wait=False))
        finally:
            for key in env:
                os.environ.pop(key)
    outs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs[0][1][-2000:] + outs[1][1][-2000:]
    a, b = (_weights(workspace, workspace.root / f"out/{n}/adapter.tgsp") for n in ("one", "two"))
    assert _max_rel(a, b) < 1e-5
    assert _files(workspace.root / "out/one") == _files(workspace.root / "out/two")


def test_spark_torchdistributor_runs_the_round_and_returns_its_code(workspace, tmp_path):
    pytest.importorskip("pyspark")
    if shutil.which("java") is None:
        pytest.fail("Spark needs a Java runtime (.ci/run installs default-jre-headless)")
    spec = workspace.spec("spark.json")
    single, spark = tmp_path / "single", tmp_path / "spark"
    assert _tgflow(workspace, "peft", "run", "--spec", str(spec), "--output-root", str(single)).returncode == 0
    os.environ.update(PYSPARK_SUBMIT_ARGS="--master local[2] --conf spark.ui.enabled=false pyspark-shell",
                      PYSPARK_PYTHON=sys.executable)
    try:
        run = lambda *extra: _tgflow(workspace, "peft", "run", "--spec", str(spec), "--cluster", "spark",  # noqa: E731
                                     "--nproc-per-node", "2", "--output-root", str(spark), *extra)
        first = run()
        assert first.returncode == 0, first.stderr[-3000:]
        again = run()  # nothing new: the round's own code (10) comes back through Spark
    finally:
        for key in ("PYSPARK_SUBMIT_ARGS", "PYSPARK_PYTHON"):
            os.environ.pop(key)
    assert again.returncode == 10, again.stderr[-2000:]
    assert _max_rel(_weights(workspace, single / "adapter.tgsp"), _weights(workspace, spark / "adapter.tgsp")) < 1e-5
    assert not list((spark / ".tgflow-launch").iterdir())  # each launch's result file is read and removed


def test_several_nodes_need_an_address_or_a_cluster(workspace):
    proc = _tgflow(workspace, "peft", "run", "--spec", str(workspace.spec()), "--nnodes", "2")
    assert proc.returncode == 2 and "--nnodes 2 needs --master-addr" in proc.stderr


def test_spark_needs_a_shared_output_root(workspace):
    proc = _tgflow(workspace, "peft", "run", "--spec", str(workspace.spec()), "--cluster", "spark")
    assert proc.returncode == 2 and "--cluster spark needs --output-root" in proc.stderr
    assert not (workspace.root / "out" / "adapter.tgsp").exists()


def test_the_golden_trainjob_command_line_runs_on_two_nodes(workspace, tmp_path):
    """tests/export/golden/k8s-trainjob/trainjob.yaml's own args, run as Kubeflow Trainer would on
    two nodes: $(PET_...) filled in per node, and its container folders mapped to this machine."""
    import re

    import yaml

    golden = yaml.safe_load((Path(__file__).parents[1] / "export/golden/k8s-trainjob/trainjob.yaml").read_text())
    trainer = golden["spec"]["trainer"]
    assert trainer["command"] == ["tgflow"]
    config = tmp_path / "config"
    config.mkdir()
    shutil.copy(workspace.spec("spec.json", output__path="out/adapter.tgsp"), config / "run_spec.json")
    one = workspace.spec("one.json", output__path="one/adapter.tgsp")
    assert _tgflow(workspace, "peft", "run", "--spec", str(one)).returncode == 0
    folders = {"/config": str(config), "/work": str(workspace.root), "/out": str(tmp_path / "out")}
    port, procs = _free_port(), []
    for node in (0, 1):
        env = {"PET_NODE_RANK": str(node), "PET_MASTER_ADDR": "127.0.0.1", "PET_MASTER_PORT": str(port)}
        argv = [re.sub(r"\$\((\w+)\)", lambda m: env[m.group(1)], a) for a in trainer["args"]]
        argv = [re.sub(r"^(/config|/work|/out)", lambda m: folders[m.group(1)], a) for a in argv]
        procs.append(_tgflow(workspace, *argv, wait=False))
    outs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs[0][1][-2000:] + outs[1][1][-2000:]
    assert json.loads(outs[0][0].strip().splitlines()[-1])["ok"] is True  # --json: node 0 reports the round
    a, b = (_weights(workspace, p) for p in (workspace.root / "one/adapter.tgsp", tmp_path / "out/adapter.tgsp"))
    assert _max_rel(a, b) < 1e-5
