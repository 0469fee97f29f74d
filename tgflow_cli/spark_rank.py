"""One rank of ``peft run --cluster spark`` (runners/distributed/spark.py), run by torchrun inside
a Spark task: ``python spark_rank.py RESULT_FILE peft run ...``.

The round runs exactly as under torchrun. Rank 0 writes the round's exit code to RESULT_FILE
(atomically) and every rank then exits 0, so Spark never retries a round that ended; a
rank that raises or is killed still fails the task.
"""

from __future__ import annotations

import os
import sys


def main(argv: list[str]) -> int:
    from tgflow_cli.main import main as tgflow
    from tgsp.atomic import write_bytes

    result, args = argv[0], argv[1:]
    code = tgflow(args)
    if os.environ.get("RANK") == "0":
        write_bytes(result, str(code).encode())
    return 0


if __name__ == "__main__":
    # Run as a file: its own folder is sys.path[0], where the CLI's modules would shadow top-level names.
    if sys.path and os.path.abspath(sys.path[0]) == os.path.dirname(os.path.abspath(__file__)):
        del sys.path[0]
    sys.exit(main(sys.argv[1:]))
