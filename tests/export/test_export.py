"""Every backend: the platform's own validator, negatives, golden files, CLI, no network."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from runners import export as ex
from runners.export.jobspec import ExportOptions
from runners.spec import load_spec
from tgflow_cli.main import main
from tgsp.errors import InputError

ROOT = Path(__file__).resolve().parents[2]
GOLDEN = Path(__file__).parent / "golden"
SPEC, _, _ = load_spec(ROOT / "examples" / "run_spec.json")
# Settings each backend needs; all references, never secrets.
SETTINGS = {
    "k8s": {"namespace": "ml-rounds"},
    "sagemaker": {"role_arn": "arn:aws:iam::123456789012:role/tgflow-training", "bucket": "s3://acme-tgflow/support",
                  "passphrase_secret_arn": "arn:aws:secretsmanager:eu-west-1:123456789012:secret:tgflow-pp-AbCdEf",
                  "scheduler_role_arn": "arn:aws:iam::123456789012:role/tgflow-scheduler"},
    "vertex": {"project": "acme-ml", "region": "europe-west4", "bucket": "gs://acme-tgflow/support",
               "service_account": "tgflow@acme-ml.iam.gserviceaccount.com",
               "passphrase_secret": "projects/acme-ml/secrets/tgflow-passphrase/versions/latest"},
    "azureml": {"compute": "azureml:gpu-cluster", "work_uri": "azureml://datastores/ml/paths/tgflow/work",
                "out_uri": "azureml://datastores/ml/paths/tgflow/out",
                "passphrase_secret_ref": "https://acme-kv.vault.azure.net/secrets/tgflow-passphrase"},
    "databricks": {"work_dir": "/Volumes/ml/tgflow/work", "out_dir": "/Volumes/ml/tgflow/out",
                   "secret_scope": "tgflow"},
}
IMPLEMENTED = [b for b in ex.BACKENDS if (ROOT / "runners" / "export" / f"{b}.py").exists()]


def options(backend, **over):
    kw = dict(image="registry.example/tgflow:0.1.0", schedule="0 3 * * MON-FRI", gpus=1,
              settings=dict(SETTINGS[backend]))
    kw.update(over)
    return ExportOptions(**kw)


@pytest.mark.parametrize("backend", IMPLEMENTED)
def test_output_passes_the_platform_validator(backend):
    files = ex.export(SPEC, backend, options(backend))
    checked = ex.check(backend, files)
    assert checked and {"run_spec.json", "job_spec.json"} <= set(files)
    job = files["job_spec.json"]
    assert job["args"][:4] == ["peft", "run", "--spec", job["args"][3]] and job["image"] == "registry.example/tgflow:0.1.0"
    assert files["run_spec.json"]["route_key"] == "support"


@pytest.mark.parametrize("backend", IMPLEMENTED)
def test_golden_files(backend, tmp_path):
    """Reviewers see exactly what changes. Regenerate: TGFLOW_REGEN_GOLDEN=1 pytest tests/export"""
    assert_golden(ex.export(SPEC, backend, options(backend)), GOLDEN / backend)


def assert_golden(files: dict, folder: Path) -> None:
    """The rendered files equal the golden folder (rewritten under TGFLOW_REGEN_GOLDEN=1: then read
    every changed line before committing it)."""
    got = {name: ex.render(name, doc).decode() for name, doc in files.items()}
    if os.environ.get("TGFLOW_REGEN_GOLDEN"):
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        for name, text in got.items():
            (folder / name).write_text(text)
    assert got == {p.name: p.read_text() for p in sorted(folder.iterdir())}


@pytest.mark.parametrize("backend", IMPLEMENTED)
@pytest.mark.parametrize("case", ["bad-cron", "bad-name", "secret-in-setting", "secret-in-spec"])
def test_negative_cases_are_refused_clearly(backend, case):
    spec, opts = SPEC, options(backend)
    if case == "bad-cron":
        opts = options(backend, schedule="0 0 * * EVERYDAY")
        needle = "not valid cron"
    elif case == "bad-name":
        opts = options(backend, name="Bad_Name!")
        needle = "DNS-1123"
    elif case == "secret-in-setting":
        key = {"k8s": "work_claim", "sagemaker": "bucket", "vertex": "bucket", "azureml": "work_uri",
               "databricks": "work_dir"}[backend]
        planted = {"sagemaker": "s3://acme/AKIAABCDEFGHIJKLMNOP/", "vertex": "gs://acme/AKIAABCDEFGHIJKLMNOP/",
                   "databricks": "/Volumes/ml/AKIAABCDEFGHIJKLMNOP/work"}
        opts = options(backend, settings={**SETTINGS[backend],
                                          key: planted.get(backend, "/x/AKIAABCDEFGHIJKLMNOP/y")})
        needle = "AWS access key id"
    else:
        spec = SPEC.model_copy(update={"feed": SPEC.feed.model_copy(
            update={"uri": "feeds/x.jsonl?sig=AbCdEfGhIjKlMnOpQrStUvWxYz0123456789"})})
        needle = "Azure key or SAS"
    with pytest.raises(InputError, match=needle):
        ex.export(spec, backend, opts)


@pytest.mark.parametrize("backend", IMPLEMENTED)
def test_cli_export_with_check(backend, tmp_path, capsys):
    argv = ["export", "--backend", backend, "--spec", str(ROOT / "examples" / "run_spec.json"), "-o", str(tmp_path),
            "--schedule", "0 3 * * *", "--check", "--json"]
    for k, v in SETTINGS[backend].items():
        argv += ["--set", f"{k}={v}"]
    assert main(argv) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["checked"] and all(Path(p).exists() for p in report["files"])


def test_cli_refuses_missing_settings(tmp_path, capsys):
    code = main(["export", "--backend", "k8s", "--spec", str(ROOT / "examples" / "run_spec.json"), "-o", str(tmp_path),
                 "--schedule", "61 * * * *"])
    assert code == 2 and "minute" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_re_export_refuses_a_non_empty_folder_and_force_removes_its_own_stale_files(tmp_path, capsys):
    """A re-export without --schedule kept the old cronjob.yaml, and kubectl apply -f applied it (issue 30)."""
    out = tmp_path / "k8s"
    base = ["export", "--backend", "k8s", "--spec", str(ROOT / "examples" / "run_spec.json"), "-o", str(out),
            "--set", "namespace=ml-rounds"]
    assert main(base + ["--schedule", "0 3 * * *"]) == 0
    assert (out / "cronjob.yaml").exists()
    (out / "kustomization.yaml").write_text("# the user's own file\n")
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    capsys.readouterr()
    assert main(base) == 2  # no --force: nothing changes
    assert "not empty" in capsys.readouterr().err and {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert main(base + ["--force"]) == 0
    names = {p.name for p in out.iterdir()}
    assert "cronjob.yaml" not in names and "job.yaml" in names  # the stale schedule is gone
    assert (out / "kustomization.yaml").read_text() == "# the user's own file\n"  # not ours: kept
    record = (out / ex.RECORD).read_text().splitlines()
    assert set(record) == names - {"kustomization.yaml", ex.RECORD}
    assert not ex.RECORD.endswith((".yaml", ".yml", ".json"))  # kubectl apply -f DIR reads those


@pytest.mark.parametrize("argv", [
    ["export", "--backend", "k8s", "--spec", str(ROOT / "examples" / "run_spec.json"), "-o", "-"],
    ["tgsp", "unpack", "nothing.tgsp", "-o", "-", "--identity", "x"],
    ["tgsp", "sign", "nothing.tgsp", "--key", "x", "-o", "-"],
    ["model", "fetch", "org/model", "-o", "-"],
    ["key", "export-secret", "he", "--to", "a", "--sign", "b", "-o", "-"],
])
def test_dash_output_where_it_cannot_mean_stdout_is_refused(argv, tmp_path, monkeypatch, capsys):
    """`unpack -o -` made a folder named '-' holding the decrypted adapter (issue 30)."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("TGFLOW_HOME", str(tmp_path / "home"))
    assert main(argv) == 2
    assert "-o - cannot be used here" in capsys.readouterr().err
    assert not (tmp_path / "-").exists()


def test_export_never_touches_the_network(tmp_path):
    """Run the real CLI in a namespace with no network at all, when this system allows one."""
    if not shutil.which("unshare") or subprocess.run(["unshare", "-rn", "true"], capture_output=True).returncode:
        pytest.skip("unshare -n is not available here")
    argv = []
    for backend in IMPLEMENTED:
        cmd = [sys.executable, "-m", "tgflow_cli", "export", "--backend", backend, "--spec",
               str(ROOT / "examples" / "run_spec.json"), "-o", str(tmp_path / backend), "--schedule", "0 3 * * *",
               "--check"]
        for k, v in SETTINGS[backend].items():
            cmd += ["--set", f"{k}={v}"]
        proc = subprocess.run(["unshare", "-rn"] + cmd, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr
        argv.append(backend)
    assert argv == IMPLEMENTED


NATIVE = {"k8s": "job.yaml", "sagemaker": "training_job.json", "vertex": "custom_job.json", "azureml": "job.yaml",
          "databricks": "job.json"}


@pytest.mark.parametrize("backend", IMPLEMENTED)
def test_validators_reject_an_unknown_field(backend):
    """The check has teeth: a field the platform does not know fails it."""
    import copy

    files = copy.deepcopy(ex.export(SPEC, backend, options(backend)))
    doc = files[NATIVE[backend]]
    (doc["spec"] if backend == "k8s" else doc)["unknownFieldXyz"] = 1
    with pytest.raises(Exception):
        ex.check(backend, files)


def test_a_hostile_export_record_removes_only_stale_job_files(tmp_path, capsys):
    out = tmp_path / "k8s"
    base = ["export", "--backend", "k8s", "--spec", str(ROOT / "examples" / "run_spec.json"), "-o", str(out),
            "--set", "namespace=ml-rounds"]
    assert main(base) == 0
    (out / "notes.txt").write_text("mine\n")
    (out / "dir.yaml").mkdir()
    (out / ex.RECORD).write_text("notes.txt\n../outside.yaml\n/etc/passwd\ndir.yaml\nstale.yaml\n")
    (out / "stale.yaml").write_text("old\n")
    (tmp_path / "outside.yaml").write_text("keep\n")
    assert main(base + ["--force"]) == 0
    assert (out / "notes.txt").read_text() == "mine\n" and (out / "dir.yaml").is_dir()
    assert (tmp_path / "outside.yaml").exists() and not (out / "stale.yaml").exists()
    (out / ex.RECORD).unlink()
    os.mkfifo(out / ex.RECORD)  # a FIFO where the record was: read without blocking, ignored
    assert main(base + ["--force"]) == 0
