"""Aggregation jobs: `tgflow export --aggregate` for every backend, validated like the round
jobs; golden files for k8s (a CronJob after the sites' window) and SageMaker; the exported
command line parses with the real CLI and runs for real."""

from __future__ import annotations

from pathlib import Path

import pytest

from runners import export as ex
from runners.export.jobspec import Aggregation, ExportOptions
from runners.spec import load_spec
from tgflow_cli.main import main
from tgsp.errors import InputError

from tests.edges.test_export_edges import _command_lines, parse_with_the_real_cli
from tests.export.test_export import IMPLEMENTED, SETTINGS, assert_golden

ROOT = Path(__file__).resolve().parents[2]
GOLDEN = Path(__file__).parent / "golden"
AGG_SPEC, _, _ = load_spec(ROOT / "examples" / "fed_aggregator.json")


def options(backend: str, **over) -> ExportOptions:
    kw = dict(image="registry.example/tgflow:0.1.0", schedule="0 5 * * *", settings=dict(SETTINGS[backend]),
              aggregate=Aggregation(quorum=2))
    kw.update(over)
    return ExportOptions(**kw)


def _argv(files: dict) -> list[list[str]]:
    return [a for name, doc in files.items() if name != "run_spec.json" for a in _command_lines(doc)]


@pytest.mark.parametrize("backend", IMPLEMENTED)
def test_every_backend_exports_a_valid_aggregation_job(backend):
    files = ex.export(AGG_SPEC, backend, options(backend))
    assert ex.check(backend, files)
    job = files["job_spec.json"]
    assert job["args"][:2] == ["fed", "aggregate"] and job["name"] == "tgflow-support-aggregate"
    assert job["exit_codes"]["14"].startswith("fed aggregate: fewer valid updates")
    argvs = _argv(files)
    assert argvs
    for argv in argvs:
        params = parse_with_the_real_cli(argv)
        assert params["quorum"] == 2 and params["json_out"] and params["wait_busy"] == 900
        assert str(params["updates_dir"]).endswith("/updates")


def test_k8s_fails_a_missed_quorum_without_retrying_it():
    files = ex.export(AGG_SPEC, "k8s", options("k8s"))
    rules = files["cronjob.yaml"]["spec"]["jobTemplate"]["spec"]["podFailurePolicy"]["rules"]
    fail = next(r for r in rules if r["action"] == "FailJob")["onExitCodes"]["values"]
    ignore = [c for r in rules if r["action"] == "Ignore" and "onExitCodes" in r for c in r["onExitCodes"]["values"]]
    assert 14 in fail and 73 in ignore and 14 not in ignore
    assert files["cronjob.yaml"]["spec"]["concurrencyPolicy"] == "Forbid"
    assert files["cronjob.yaml"]["metadata"]["labels"]["app.kubernetes.io/component"] == "fed-aggregate"


@pytest.mark.parametrize("backend", ["k8s", "sagemaker"])
def test_aggregation_golden_files(backend):
    """Regenerate: TGFLOW_REGEN_GOLDEN=1 pytest tests/export -k golden (then read every line)."""
    assert_golden(ex.export(AGG_SPEC, backend, options(backend)), GOLDEN / f"{backend}-aggregate")


def test_an_aggregation_needs_a_federated_spec_and_a_safe_updates_folder(tmp_path, capsys):
    plain, _, _ = load_spec(ROOT / "examples" / "run_spec.json")
    with pytest.raises(InputError, match="federation section"):
        ex.export(plain, "k8s", options("k8s"))
    for bad in ("../elsewhere", "/abs", "a b", "x/../../y"):
        with pytest.raises(InputError, match="inside the job's input root"):
            ex.export(AGG_SPEC, "k8s", options("k8s", aggregate=Aggregation(2, bad)))
    spec = str(ROOT / "examples" / "fed_aggregator.json")
    assert main(["export", "--backend", "k8s", "--spec", spec, "-o", str(tmp_path / "o"), "--aggregate"]) == 2
    assert "--aggregate and --quorum go together" in capsys.readouterr().err and not (tmp_path / "o").exists()
