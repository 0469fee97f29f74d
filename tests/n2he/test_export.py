"""n2he exports run embedded (TenSEAL in the runner image): a site's round, the aggregator's
sum and the key holder's decryption export on every backend, validate with the platforms'
own validators, parse with the real CLI, and reference no sidecar or service."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from runners import export as ex
from runners.export.jobspec import Aggregation, ExportOptions
from runners.spec import load_spec
from tests.edges.test_export_edges import _command_lines, parse_with_the_real_cli
from tests.export.test_export import IMPLEMENTED, SETTINGS
from tgsp.errors import InputError

ROOT = Path(__file__).resolve().parents[2]
SPECS = {role: load_spec(ROOT / "examples" / f"n2he_{role}.json")[0] for role in ("site-a", "aggregator", "keyholder")}


def options(backend: str, aggregate: Aggregation | None = None) -> ExportOptions:
    return ExportOptions(image="registry.example/tgflow:0.1.0", schedule="0 5 * * *",
                         settings=dict(SETTINGS[backend]), aggregate=aggregate)


def _argvs(files: dict) -> list[list[str]]:
    return [a for name, doc in files.items() if name != "run_spec.json" for a in _command_lines(doc)]


@pytest.mark.parametrize("backend", IMPLEMENTED)
@pytest.mark.parametrize("role, aggregate, command", [
    ("site-a", None, ["peft", "run"]),
    ("aggregator", Aggregation(2), ["fed", "aggregate"]),
    ("keyholder", Aggregation(2, decrypt_from="aggregator-sign"), ["fed", "decrypt"]),
])
def test_every_role_exports_on_every_backend(backend, role, aggregate, command):
    files = ex.export(SPECS[role], backend, options(backend, aggregate))
    assert ex.check(backend, files)
    assert files["job_spec.json"]["args"][:2] == command
    rendered = json.dumps({k: v for k, v in files.items() if k != "run_spec.json"}, default=str).lower()
    assert "sidecar" not in rendered and "n2he_" not in rendered
    argvs = _argvs(files)
    assert argvs and all(a[:2] == command for a in argvs)
    for argv in argvs:
        params = parse_with_the_real_cli(argv)
        if role == "keyholder":
            assert params["aggregator"] == "aggregator-sign" and params["quorum"] == 2
            assert str(params["sum_path"]).endswith("/sum.tgsp") and str(params["updates_dir"]).endswith("/updates")


def test_key_holder_jobs_are_named_and_checked():
    files = ex.export(SPECS["keyholder"], "k8s", options("k8s", Aggregation(2, decrypt_from="aggregator-sign")))
    meta = files["cronjob.yaml"]["metadata"]
    assert meta["name"] == "tgflow-support-decrypt"
    assert meta["labels"]["app.kubernetes.io/component"] == "fed-decrypt"
    assert meta["labels"]["tgflow.dev/route"] == "support"
    with pytest.raises(InputError, match="at least 2"):
        ex.export(SPECS["aggregator"], "k8s", options("k8s", Aggregation(1)))
    with pytest.raises(InputError, match="not \"n2he\""):
        ex.export(load_spec(ROOT / "examples" / "fed_aggregator.json")[0], "k8s",
                  options("k8s", Aggregation(2, decrypt_from="aggregator-sign")))
    with pytest.raises(InputError, match="inside the job's input root"):
        ex.export(SPECS["keyholder"], "k8s", options("k8s", Aggregation(2, decrypt_from="x", sum="../sum.tgsp")))


def test_the_runner_image_installs_n2he():
    assert '".[train,n2he]"' in (ROOT / "Dockerfile").read_text()
