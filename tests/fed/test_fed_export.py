"""The exported aggregation job's own command line, run for real."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from runners import export as ex
from runners.export.jobspec import Aggregation, ExportOptions
from runners.spec import load_spec
from tgflow_cli.main import main

from .conftest import EXAMPLES, SITES


def test_the_exported_aggregation_command_runs(fed, tmp_path, capsys):
    """The k8s job's own command line, with its mounts mapped onto folders: a real aggregation
    of the three sites' updates (the k8s mounts: /config, /work read-only, /out)."""
    work = tmp_path / "work"
    shutil.copytree(EXAMPLES, work, ignore=shutil.ignore_patterns("demo-out"))
    (work / "updates").mkdir()
    for site in SITES:
        shutil.copyfile(fed.updates[site], work / "updates" / f"{site}.tgsp")
    config = tmp_path / "config"
    config.mkdir()
    spec, _, _ = load_spec(EXAMPLES / "fed_aggregator.json")
    files = ex.export(spec, "k8s", ExportOptions(settings={"namespace": "ml"}, schedule="0 5 * * *",
                                                 aggregate=Aggregation(quorum=2)))
    (config / "run_spec.json").write_text(files["configmap.yaml"]["data"]["run_spec.json"])
    argv = files["job.yaml"]["spec"]["template"]["spec"]["containers"][0]["args"]
    mapped = [a.replace("/config", str(config)).replace("/work", str(work)).replace("/out", str(tmp_path / "out"))
              for a in argv]
    capsys.readouterr()
    assert main(mapped) == 0
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert report["outcome"] == "packaged" and len(report["training"]["aggregation"]["accepted"]) == 3
    assert Path(report["package"]).parent == tmp_path / "out"
