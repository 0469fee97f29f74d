"""``peft run --cluster spark``: a round on a Spark cluster (Databricks), started by Spark's
own TorchDistributor from the driver, and ended with the round's exit code.

TorchDistributor runs a barrier stage with one task per node; each task runs torchrun on
tgflow_cli/spark_rank.py, which runs ``peft run`` as one rank (rank 0 leads, runners/distributed/ranks.py).
A Spark task that exits non-zero fails the stage and Spark retries it, so every rank exits 0
once the round has ended, and rank 0 first records the round's code in a result file on
the shared output volume, which this driver reads. A rank that dies (memory, a lost node)
still fails the stage, and the driver then reports 75: re-run, the last checkpoint
(written atomically) stands.
"""

from __future__ import annotations

import uuid
from pathlib import Path

from tgsp.errors import InputError

from .. import outcomes

RESULTS = ".tgflow-launch"  # under the output root: one small file per launch, removed after reading


def launch(argv: list[str], processes: int, *, output_root: Path | None, rank_script: Path) -> int:
    """``processes`` ranks in all, each running ``rank_script`` (the CLI's tgflow_cli/spark_rank.py:
    TorchDistributor runs a file, and the library never imports the CLI to find it). GPUs are
    used when the cluster gives tasks GPUs (spark.task.resource.gpu.amount, one task per node
    holding that many); on CPUs each Spark task is one rank."""
    if output_root is None:
        raise InputError("--cluster spark needs --output-root on a volume every node mounts",
                         hint="e.g. --output-root /Volumes/<catalog>/<schema>/<volume>/out")
    try:
        from pyspark.ml.torch.distributor import TorchDistributor
        from pyspark.sql import SparkSession
    except ImportError:
        raise InputError("--cluster spark needs pyspark (Databricks runtimes ship it)",
                         hint="run on a Spark cluster, or pip install 'tgflow[spark]'") from None
    result = Path(output_root) / RESULTS / f"{uuid.uuid4().hex}.code"
    result.parent.mkdir(parents=True, exist_ok=True)
    spark = SparkSession.builder.getOrCreate()  # the cluster's session (a job's driver has one)
    use_gpu = spark.sparkContext.getConf().get("spark.task.resource.gpu.amount", "0") not in ("0", "")
    failure = None
    try:
        TorchDistributor(num_processes=processes, local_mode=False, use_gpu=use_gpu).run(
            str(rank_script), str(result), *argv)
    except Exception as exc:  # noqa: BLE001 - a failed stage: Spark's error is long Java text
        failure = exc
    return read_result(result, failed=failure is not None)


def read_result(result: Path, *, failed: bool) -> int:
    """Rank 0's recorded code (an integer in the one table), removing the file."""
    try:
        text = result.read_text()[:16]
        result.unlink()
    except OSError:
        # No record: a rank died before the round ended; its last checkpoint (atomic) stands.
        return outcomes.code("interrupted-resumable") if failed else outcomes.code("failed")
    return int(text) if text.strip().isdigit() and int(text) in outcomes.BY_CODE else outcomes.code("failed")
