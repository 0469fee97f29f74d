"""tgflow export --backend k8s --serve vllm: a Deployment and Service that serve the route's production
adapter with vLLM, fed by `tgflow route materialize`; validated by kubernetes-validate strict."""

from __future__ import annotations

import copy
import json
import os
import shlex
import subprocess
from pathlib import Path

import pytest
import yaml

from runners import export as ex
from runners.export import serve
from runners.export.jobspec import ExportOptions
from runners.export.serve import Serving
from runners.spec import load_spec
from tests.export.test_export import GOLDEN, ROOT, assert_golden
from tgflow_cli.main import command, main
from tgsp.errors import InputError

SPEC, _, _ = load_spec(ROOT / "examples" / "run_spec.json")
IMAGE = "registry.example/tgflow:0.1.0"
OCI = "oci://registry.example:5000/tgflow/routes"


def options(**over):
    kw = dict(image=IMAGE, gpus=1, settings={"namespace": "ml-serving"})
    kw.update(over)
    return ExportOptions(**kw)


def exported(spec=SPEC, serving=None, **over):
    return ex.export(spec, "k8s", options(**over), serving=serving or Serving())


def pod_of(files):
    return files["deployment.yaml"]["spec"]["template"]["spec"]


def by_name(items):
    return {i["name"]: i for i in items}


def test_the_export_passes_kubernetes_validate_strict():
    files = exported()
    assert set(files) == {"deployment.yaml", "service.yaml", "run_spec.json"}
    checked = ex.check("k8s", files)
    assert "deployment.yaml: kubernetes-validate 1.32 strict" in checked
    assert "service.yaml: kubernetes-validate 1.32 strict" in checked
    assert files["deployment.yaml"]["kind"] == "Deployment" and files["service.yaml"]["kind"] == "Service"


def test_golden_files():
    """Regenerate: TGFLOW_REGEN_GOLDEN=1 pytest tests/export/test_serve.py (then read every line)."""
    assert_golden(exported(), GOLDEN / "k8s-serve-vllm")


def test_the_adapters_live_in_a_memory_backed_empty_dir_mounted_in_all_three():
    pod = pod_of(exported())
    assert by_name(pod["volumes"])["adapters"]["emptyDir"]["medium"] == "Memory"
    containers = by_name(pod["initContainers"] + pod["containers"])
    assert set(containers) == {"materialize", "follow", "vllm"}
    for c in containers.values():
        assert {"name": "adapters", "mountPath": "/adapters"}.items() <= by_name(c["volumeMounts"])["adapters"].items()
    assert by_name(containers["vllm"]["volumeMounts"])["adapters"]["readOnly"] is True
    # Nothing tgflow decrypts goes to a disk-backed volume: its /tmp is memory too.
    assert by_name(pod["volumes"])["tmp"]["emptyDir"]["medium"] == "Memory"


def test_vllm_serves_the_routes_adapter_path():
    pod = pod_of(exported())
    vllm = by_name(pod["containers"])["vllm"]
    assert vllm["image"] == serve.DEFAULT_IMAGE == "vllm/vllm-openai:v0.11.0"
    args = vllm["args"]
    flag = lambda f: args[args.index(f) + 1]  # noqa: E731
    assert flag("--model") == "/work/tiny-base"  # the base model the round trained on, on the work claim
    assert "--enable-lora" in args and flag("--max-lora-rank") == "8"
    assert flag("--lora-modules") == "support=/adapters/support"
    env = {e["name"]: e["value"] for e in vllm["env"]}
    assert env["VLLM_ALLOW_RUNTIME_LORA_UPDATING"] == "True"
    assert vllm["ports"] == [{"name": "http", "containerPort": 8000, "protocol": "TCP"}]
    assert vllm["readinessProbe"]["httpGet"] == {"path": "/health", "port": "http"}
    assert vllm["resources"]["limits"]["nvidia.com/gpu"] == "1"


def test_the_service_reaches_port_8000_of_these_pods():
    files = exported()
    svc = files["service.yaml"]["spec"]
    assert svc["ports"] == [{"name": "http", "port": 8000, "targetPort": "http", "protocol": "TCP"}]
    assert svc["selector"] == files["deployment.yaml"]["spec"]["template"]["metadata"]["labels"]
    assert svc["selector"]["app.kubernetes.io/component"] == "serve"  # not the training Job's pods


@pytest.mark.parametrize("r,rank", [(1, 8), (8, 8), (12, 16), (64, 64), (300, 320), (512, 512)])
def test_max_lora_rank_is_at_least_8_and_one_vllm_takes(r, rank):
    spec = SPEC.model_copy(update={"lora": SPEC.lora.model_copy(update={"r": r})})
    args = by_name(pod_of(exported(spec))["containers"])["vllm"]["args"]
    assert args[args.index("--max-lora-rank") + 1] == str(rank)


def _parse(argv):
    """Hand argv to the real click tree as a run would (subcommands, flags, conversions)."""
    node, args = command(), list(argv)
    while hasattr(node, "get_command"):
        sub = node.get_command(None, args[0])
        assert sub is not None, f"no command {args[0]!r}"
        node, args = sub, args[1:]
    return node.make_context("tgflow", args).params


def test_init_and_sidecar_commands_parse_as_tgflow_commands():
    pod = pod_of(exported())
    init, follow = pod["initContainers"][0], by_name(pod["containers"])["follow"]
    assert init["name"] == "materialize" and init["image"] == follow["image"] == IMAGE
    base = ["route", "materialize", "support", "--registry", "/out/registry", "--to", "/adapters",
            "--alias", "production", "--identity", "operator"]
    assert init["args"] == base
    assert follow["command"] == ["tgflow"] and follow["args"][:len(base)] == base
    assert follow["args"][len(base):] == ["--watch", "60", "--on-change", serve.ON_CHANGE]
    params = _parse(init["args"])
    assert (params["route"], params["registry"], str(params["to"]), params["alias"], list(params["identity"])) == \
        ("support", "/out/registry", "/adapters", "production", ["operator"]) and params["watch"] is None
    params = _parse(follow["args"])
    assert params["watch"] == 60 and params["on_change"] == serve.ON_CHANGE


def test_the_init_shim_passes_the_argv_and_takes_unchanged_as_success(tmp_path):
    """A restarted pod sandbox keeps its emptyDir: materialize then exits 20 (unchanged), which must
    not fail the pod; any other failure must."""
    init = pod_of(exported())["initContainers"][0]
    stub = tmp_path / "tgflow"
    stub.write_text('#!/bin/sh\nprintf "%s\\n" "$@" > "$ARGS_OUT"\nexit "$STUB_CODE"\n')
    stub.chmod(0o755)
    for code, want in ((0, 0), (20, 0), (3, 3), (6, 6)):
        env = {**os.environ, "PATH": f"{tmp_path}:{os.environ['PATH']}", "STUB_CODE": str(code),
               "ARGS_OUT": str(tmp_path / "args")}
        proc = subprocess.run(init["command"] + init["args"], env=env, timeout=30)
        assert proc.returncode == want, code
        assert (tmp_path / "args").read_text().splitlines() == init["args"]


def test_the_on_change_hook_posts_the_new_adapter_to_vllm(tmp_path):
    """Run the hook as materialize does (/bin/sh -c) with a curl that records its argv: the body is
    the JSON vLLM's /v1/load_lora_adapter takes."""
    curl = tmp_path / "curl"
    curl.write_text('#!/bin/sh\nfor a in "$@"; do printf "%s\\0" "$a"; done > "$ARGS_OUT"\n')
    curl.chmod(0o755)
    env = {**os.environ, "PATH": f"{tmp_path}:{os.environ['PATH']}", "ARGS_OUT": str(tmp_path / "argv"),
           "TGFLOW_ADAPTER_NAME": "support-v3", "TGFLOW_ADAPTER_PATH": "/adapters/support-v3",
           "TGFLOW_PREVIOUS_NAME": "support-v2"}
    assert subprocess.run(["/bin/sh", "-c", serve.ON_CHANGE], env=env, timeout=30).returncode == 0
    argv = (tmp_path / "argv").read_text().split("\0")[:-1]
    assert argv[:4] == ["-fsS", "-X", "POST", "http://127.0.0.1:8000/v1/load_lora_adapter"]
    assert argv[argv.index("-H") + 1] == "Content-Type: application/json"
    assert json.loads(argv[argv.index("-d") + 1]) == {"lora_name": "support-v3", "lora_path": "/adapters/support-v3"}


def test_keys_and_passphrase_are_mounted_exactly_as_the_k8s_job_mounts_them():
    job_pod = ex.export(SPEC, "k8s", options())["job.yaml"]["spec"]["template"]["spec"]
    [job] = job_pod["containers"]
    pod = pod_of(exported())
    secret_vols = ("keyring-keys", "keyring-trust", "keyring-revocations", "passphrase")
    for name in secret_vols:
        assert by_name(pod["volumes"])[name] == by_name(job_pod["volumes"])[name]
    env = {e["name"]: e["value"] for e in job["env"]}
    for c in (pod["initContainers"][0], by_name(pod["containers"])["follow"]):
        for name in secret_vols:
            assert by_name(c["volumeMounts"])[name] == by_name(job["volumeMounts"])[name]
        assert {e["name"]: e["value"] for e in c["env"]}.items() >= {k: env[k] for k in
                                                                    ("TGFLOW_HOME", "TGFLOW_PASSPHRASE_FILE")}.items()
    vllm = by_name(pod["containers"])["vllm"]  # the engine never sees the keyring or the passphrase
    assert not set(secret_vols) & {m["name"] for m in vllm["volumeMounts"]}
    for c in pod["initContainers"] + pod["containers"]:
        assert c["securityContext"] == job["securityContext"]
        assert c["securityContext"]["runAsNonRoot"] and c["securityContext"]["readOnlyRootFilesystem"]
        assert c["securityContext"]["allowPrivilegeEscalation"] is False
    assert pod["securityContext"] == job_pod["securityContext"] and pod["automountServiceAccountToken"] is False
    # the registry (on the state claim) is only read
    assert by_name(pod["volumes"])["state"]["persistentVolumeClaim"] == {"claimName": "tgflow-state", "readOnly": True}


def test_an_oci_registry_replaces_the_state_claim():
    files = exported(serving=Serving(registry=OCI), settings={"registry_secret": "tgflow-registry"})
    ex.check("k8s", files)
    pod = pod_of(files)
    assert "state" not in by_name(pod["volumes"])
    assert by_name(pod["volumes"])["registry-auth"]["secret"]["items"] == [{"key": ".dockerconfigjson",
                                                                           "path": "config.json"}]
    for c in (pod["initContainers"][0], by_name(pod["containers"])["follow"]):
        assert c["args"][c["args"].index("--registry") + 1] == OCI
        assert {"name": "DOCKER_CONFIG", "value": "/secrets/registry"} in c["env"]
        assert _parse(c["args"])["registry"] == OCI


@pytest.mark.parametrize("serving,over,needle", [
    (Serving(registry="oci://registry.example/routes:v1"), {}, "no :TAG"),
    (Serving(registry="/srv/registry"), {}, "oci://HOST/REPO"),
    (Serving(image="Not An Image"), {}, "image reference"),
    (Serving(engine="tgi"), {}, "not one of vllm"),
    (Serving(), {"schedule": "0 3 * * *"}, "--schedule shapes a training job"),
    (Serving(), {"settings": {"engine": "jobset"}}, "no such setting"),
    (Serving(), {"settings": {"registry_secret": "tgflow-registry"}}, "for an oci:// registry"),
    (Serving(), {"settings": {"identity": "a b"}}, "not a plain value|not a key name"),
    (Serving(), {"name": "1serve"}, "must start with a letter"),
])
def test_bad_requests_are_refused(serving, over, needle):
    with pytest.raises(InputError, match=needle):
        exported(serving=serving, **over)


def test_a_rank_vllm_cannot_take_is_refused():
    spec = SPEC.model_copy(update={"lora": SPEC.lora.model_copy(update={"r": 1024})})
    with pytest.raises(InputError, match="over vLLM's largest --max-lora-rank 512"):
        exported(spec)


def test_the_check_has_teeth():
    files = copy.deepcopy(exported())
    by_name(pod_of(files)["volumes"])["adapters"]["emptyDir"] = {}  # a disk-backed folder
    with pytest.raises(ValueError, match="memory-backed /adapters"):
        ex.check("k8s", files)
    files = copy.deepcopy(exported())
    files["deployment.yaml"]["spec"]["unknownFieldXyz"] = 1
    with pytest.raises(Exception):
        ex.check("k8s", files)


def test_cli_writes_and_checks(tmp_path, capsys):
    out = tmp_path / "serve"
    code = main(["export", "--backend", "k8s", "--serve", "vllm", "--spec", str(ROOT / "examples" / "run_spec.json"),
                 "-o", str(out), "--image", IMAGE, "--serve-image", "vllm/vllm-openai:v0.11.0", "--registry", OCI,
                 "--gpus", "2", "--check", "--json"])
    assert code == 0, capsys.readouterr().err
    report = json.loads(capsys.readouterr().out)
    assert sorted(Path(p).name for p in report["files"]) == ["deployment.yaml", "run_spec.json", "service.yaml"]
    assert "deployment.yaml: kubernetes-validate 1.32 strict" in report["checked"]
    pod = yaml.safe_load((out / "deployment.yaml").read_text())["spec"]["template"]["spec"]
    vllm, follow = by_name(pod["containers"])["vllm"], by_name(pod["containers"])["follow"]
    # the shell text survives the YAML round trip
    assert follow["args"][-1] == serve.ON_CHANGE and pod["initContainers"][0]["command"][2] == serve.INIT_SHIM
    assert vllm["args"][-2:] == ["--tensor-parallel-size", "2"] and vllm["resources"]["limits"]["nvidia.com/gpu"] == "2"


@pytest.mark.parametrize("backend", ["sagemaker", "vertex", "azureml", "databricks"])
def test_serve_with_another_backend_is_refused_in_one_line(backend, tmp_path, capsys):
    out = tmp_path / "out"
    code = main(["export", "--backend", backend, "--serve", "vllm", "--spec", str(ROOT / "examples" / "run_spec.json"),
                 "-o", str(out)])
    err = capsys.readouterr().err.strip()
    assert code == 2 and not out.exists()
    assert len(err.splitlines()) == 1 and f"use it with --backend k8s, not --backend {backend}" in err


@pytest.mark.parametrize("flags", [["--serve-image", "vllm/vllm-openai:v0.11.0"], ["--registry", OCI]])
def test_serve_options_without_serve_are_refused(flags, tmp_path, capsys):
    code = main(["export", "--backend", "k8s", "--spec", str(ROOT / "examples" / "run_spec.json"),
                 "-o", str(tmp_path / "out"), *flags])
    assert code == 2 and f"{flags[0]} goes with --serve vllm" in capsys.readouterr().err


def test_the_documented_commands_are_the_exported_ones():
    """docs/export.md shows the exported command lines; they must be what the export writes."""
    text = (ROOT / "docs" / "export.md").read_text()
    section = text.split("## Serving the production adapter with vLLM", 1)[1].split("\n## ", 1)[0]
    pod = pod_of(exported())
    assert shlex.join(["tgflow", *by_name(pod["containers"])["follow"]["args"]]) in section.replace("\\\n  ", "")
    words = " ".join(section.split())
    assert "POST `/v1/load_lora_adapter`" in words and "only if it answered, POST `/v1/unload_lora_adapter`" in words
