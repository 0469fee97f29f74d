"""Where this node sits in a multi-node round, read from the platform's own description of
its cluster (``peft run --cluster NAME``), so an exported job needs no address of its own.

- ``sagemaker``: /opt/ml/input/config/resourceconfig.json (``current_host``, ``hosts``),
  which SageMaker writes into every training container. Node 0 is the first host in
  sorted order, as in SageMaker's own training toolkit.
- ``vertex``: the ``CLUSTER_SPEC`` environment variable, which Vertex AI sets in every
  replica of a CustomJob: ``cluster.workerpool0[0]`` is the chief (node 0) and
  ``workerpool1[i]`` is node i + 1.

Each reader is a function of the environment (and a folder, for files), so tests run it on
a description written the way the platform writes it. The rendezvous itself is torch's own
(runners/distributed/launch.py).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping

from tgsp.errors import InputError

SAGEMAKER_CONFIG = Path("/opt/ml/input/config")
_MAX_DESCRIPTION = 1 << 20  # a cluster description is a few hundred bytes


@dataclass(frozen=True)
class Placement:
    nnodes: int
    node_rank: int
    master_addr: str
    master_port: int | None = None  # None: peft run's --master-port


def _fail(name: str, problem: str) -> InputError:
    return InputError(f"--cluster {name}: {problem}",
                      hint="run inside that platform's multi-node job, or pass --nnodes/--node-rank/--master-addr")


def sagemaker(env: Mapping[str, str], config_dir: Path = SAGEMAKER_CONFIG) -> Placement:
    path = Path(env.get("TGFLOW_SAGEMAKER_CONFIG_DIR", config_dir)) / "resourceconfig.json"
    try:
        with open(path, "rb") as f:
            doc = json.loads(f.read(_MAX_DESCRIPTION + 1)[:_MAX_DESCRIPTION])
    except FileNotFoundError:
        raise _fail("sagemaker", f"{path} does not exist (SageMaker writes it into every training container)") from None
    except (OSError, ValueError) as exc:
        raise _fail("sagemaker", f"{path} is not readable JSON ({exc.__class__.__name__})") from None
    hosts, current = (doc.get("hosts"), doc.get("current_host")) if isinstance(doc, dict) else (None, None)
    if not (isinstance(hosts, list) and hosts and all(isinstance(h, str) and h for h in hosts)
            and len(set(hosts)) == len(hosts) and current in hosts):
        raise _fail("sagemaker", f"{path} needs distinct \"hosts\" and a \"current_host\" among them")
    ordered = sorted(hosts)
    return Placement(len(ordered), ordered.index(current), ordered[0])


def _host_port(name: str, entry: object) -> tuple[str, int]:
    if not isinstance(entry, str) or entry.count(":") != 1:
        raise _fail(name, f"CLUSTER_SPEC address {str(entry)[:80]!r} is not host:port")
    host, port = entry.split(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise _fail(name, f"CLUSTER_SPEC address {entry[:80]!r} is not host:port")
    return host, int(port)


def vertex(env: Mapping[str, str], config_dir: Path | None = None) -> Placement:
    raw = env.get("CLUSTER_SPEC")
    if not raw:
        raise _fail("vertex", "CLUSTER_SPEC is not set (Vertex AI sets it in every replica of a multi-replica job)")
    try:
        doc = json.loads(raw[:_MAX_DESCRIPTION])
        pools, task = doc["cluster"], doc["task"]
        chief, workers = pools["workerpool0"], pools.get("workerpool1", [])
        kind, index = task["type"], task["index"]
    except (ValueError, KeyError, TypeError):
        raise _fail("vertex", "CLUSTER_SPEC needs cluster.workerpool0 and task.type/index") from None
    if not (isinstance(chief, list) and len(chief) == 1 and isinstance(workers, list)
            and isinstance(index, int) and not isinstance(index, bool)):
        raise _fail("vertex", "CLUSTER_SPEC needs exactly one chief (workerpool0) and a list of workers (workerpool1)")
    ranks = {"workerpool0": 0, "workerpool1": 1 + index}
    if kind not in ranks or index < 0 or (kind == "workerpool1" and index >= len(workers)) or \
            (kind == "workerpool0" and index != 0):
        raise _fail("vertex", f"this replica ({str(kind)[:40]}, {index}) is not the chief or a worker in workerpool1")
    for entry in workers:
        _host_port("vertex", entry)
    host, port = _host_port("vertex", chief[0])
    return Placement(1 + len(workers), ranks[kind], host, port)


CLUSTERS: dict[str, Callable[..., Placement]] = {"sagemaker": sagemaker, "vertex": vertex}


def placement(name: str, nnodes: int | None, env: Mapping[str, str] | None = None) -> Placement:
    """This node's placement; ``nnodes`` (the exported job's node count) must agree."""
    reader = CLUSTERS.get(name)
    if reader is None:
        raise InputError(f"--cluster {name!r} is not known; choose one of {', '.join(CLUSTERS)}, or spark")
    found = reader(os.environ if env is None else env)
    if nnodes is not None and found.nnodes != nnodes:
        raise _fail(name, f"the cluster has {found.nnodes} nodes, but --nnodes says {nnodes}")
    return found
