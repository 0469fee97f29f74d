"""``peft run --nproc-per-node P``: start the round's processes with torch's own elastic
launcher (what torchrun runs), and end with the round's exit code.

torchrun itself exits 1 whenever a worker fails, so a scheduler would see 1 for an
interrupted round (75, resume), a skipped one (10) or a gate refusal (12) alike. Every
rank of a round ends with rank 0's code (runners/distributed/ranks.py); this launcher returns
that code. Rendezvous: one node, c10d on localhost; several nodes, torchrun's static
rendezvous on --master-addr/--master-port with --node-rank (as Kubeflow Trainer,
JobSet and the platforms set them).
"""

from __future__ import annotations

import sys
import uuid

from .. import outcomes


def launch(argv: list[str], nproc: int, *, nnodes: int = 1, node_rank: int = 0, master_addr: str | None = None,
           master_port: int = 29500) -> int:
    import signal

    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    if nnodes == 1 and master_addr is None:
        rdzv = {"rdzv_backend": "c10d", "rdzv_endpoint": "127.0.0.1:0", "rdzv_configs": {}, "run_id": uuid.uuid4().hex}
    else:  # every node must name the same run: the static rendezvous keys its store by it
        endpoint = f"{master_addr or '127.0.0.1'}:{master_port}"
        rdzv = {"rdzv_backend": "static", "rdzv_endpoint": endpoint, "rdzv_configs": {"rank": node_rank},
                "run_id": f"tgflow-{endpoint}"}
    config = LaunchConfig(min_nodes=nnodes, max_nodes=nnodes, nproc_per_node=nproc, max_restarts=0,
                          monitor_interval=0.2, **rdzv)
    try:
        elastic_launch(config, sys.executable)("-m", "tgflow_cli", *argv)
    except ChildFailedError as exc:
        return exit_code([f.exitcode for f in exc.failures.values()])
    except SignalException as exc:
        # The launcher passed the signal on and waited for the workers: on SIGTERM each rank
        # stopped at the same step and rank 0 checkpointed (a worker killed before that leaves
        # the previous checkpoint, written atomically). Either way a re-run resumes.
        if exc.sigval == signal.SIGINT:
            return outcomes.code("interrupted")
        return outcomes.code("interrupted-resumable")
    return 0


def exit_code(codes: list[int]) -> int:
    """The round's code from its failed workers' codes. Every rank exits with rank 0's code,
    and the launcher then stops the others with SIGTERM: a rank's own code wins over a
    signal. With signals only (a rank killed, say for memory), 128 + N."""
    own = [c for c in codes if c > 0]
    if own:
        return own[0] if len(set(own)) == 1 else max(own)
    signals = [128 - c for c in codes if c < 0]
    return max(signals) if signals else outcomes.code("failed")
