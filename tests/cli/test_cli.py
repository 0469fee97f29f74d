"""The CLI through its real entry point: exit codes, --json, messages."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tgflow_cli.main import main
from tests.helpers import PASS, cli, files_of, make_adapter, tgflow_exe


run = cli  # the real entry point, in-process


@pytest.fixture
def setup(home, tmp_path, capsys):
    for name, kind in (("rel", "signing"), ("ops", "recipient")):
        assert run(capsys, "key", "generate", name, "--type", kind)[0] == 0
    return make_adapter(tmp_path / "adapter")


def test_round_trip_with_json(setup, tmp_path, capsys):
    pkg = tmp_path / "a.tgsp"
    code, out, _ = run(capsys, "tgsp", "build", setup, "-o", pkg, "--route", "r1", "--version", "4",
                       "--recipient", "ops", "--sign", "rel", "--json")
    assert code == 0
    built = json.loads(out)
    assert built["route"] == "r1" and built["signed_by"] == ["rel"]
    code, out, _ = run(capsys, "tgsp", "verify", pkg, "--json")
    report = json.loads(out)
    assert code == 0 and report["ok"] and report["package_id"] == built["package_id"]
    assert [c["name"] for c in report["checks"]] == ["format", "entries", "signatures", "evidence", "digests", "expiry", "rollback"]
    code, out, _ = run(capsys, "tgsp", "inspect", pkg, "--json")
    info = json.loads(out)
    assert code == 0 and {s["algorithm"] for s in info["signatures"]} == {"ed25519", "ml-dsa-65"}
    assert info["recipients"] and [e["type"] for e in info["evidence"]] == ["tgflow.build", "tgflow.sign"]
    code, out, _ = run(capsys, "tgsp", "unpack", pkg, "-o", tmp_path / "out", "--identity", "ops", "--json")
    assert code == 0 and json.loads(out)["files"] == 4
    assert files_of(tmp_path / "out") == files_of(setup)


def test_verify_failure_exit_1_with_named_check(setup, tmp_path, capsys):
    pkg = tmp_path / "a.tgsp"
    run(capsys, "tgsp", "build", setup, "-o", pkg, "--sign", "rel")
    data = bytearray(pkg.read_bytes())
    data[1500] ^= 0x40
    pkg.write_bytes(bytes(data))
    code, out, err = run(capsys, "tgsp", "verify", pkg, "--json")
    assert code == 1
    report = json.loads(out)  # exactly one JSON document on stdout
    assert not report["ok"] and any(c["status"] == "failed" for c in report["checks"])
    assert "check failed" in err and len(err.strip().splitlines()) <= 2


def test_rollback_state_file_moves_forward_only(setup, tmp_path, capsys):
    state = tmp_path / "state.json"
    v5, v4 = tmp_path / "v5.tgsp", tmp_path / "v4.tgsp"
    run(capsys, "tgsp", "build", setup, "-o", v5, "--route", "r", "--version", "5", "--sign", "rel")
    run(capsys, "tgsp", "build", setup, "-o", v4, "--route", "r", "--version", "4", "--sign", "rel")
    assert run(capsys, "tgsp", "verify", v5, "--state", state)[0] == 0
    assert json.loads(state.read_text())["routes"]["r"]["version"] == 5
    code, _, err = run(capsys, "tgsp", "verify", v4, "--state", state)
    assert code == 1 and "rollback" in err
    assert run(capsys, "tgsp", "verify", v4, "--min-version", "5")[0] == 1


def test_sign_later_step(setup, tmp_path, capsys):
    pkg = tmp_path / "a.tgsp"
    code, _, err = run(capsys, "tgsp", "build", setup, "-o", pkg)
    assert code == 0 and "unsigned" in err
    assert run(capsys, "tgsp", "verify", pkg)[0] == 1
    assert run(capsys, "tgsp", "sign", pkg, "--key", "rel")[0] == 0
    assert run(capsys, "tgsp", "verify", pkg)[0] == 0


def test_key_lifecycle(setup, tmp_path, capsys):
    pub = tmp_path / "rel.pub.json"
    assert run(capsys, "key", "export-public", "rel", "-o", pub)[0] == 0
    code, out, _ = run(capsys, "key", "list", "--json")
    assert code == 0 and {k["name"] for k in json.loads(out)} == {"rel", "ops"}
    code, out, _ = run(capsys, "key", "list")  # the table (it once called the `show` command instead)
    assert code == 0 and "rel" in out and "ops" in out and "signing" in out and "recipient" in out
    assert run(capsys, "key", "rotate", "rel")[0] == 0
    code, out, _ = run(capsys, "key", "show", "rel", "--json")
    assert json.loads(out)["version"] == 2
    code, out, _ = run(capsys, "key", "revoke", "rel", "--reason", "test", "--json")
    assert code == 0 and Path(json.loads(out)["file"]).exists()
    code, out, _ = run(capsys, "key", "audit", "--json")
    log = json.loads(out)
    assert code == 0 and log["ok"] and [r["op"] for r in log["log"]] == ["generate", "generate", "rotate", "revoke"]
    # a revoked key cannot sign any more
    code, _, err = run(capsys, "tgsp", "build", setup, "-o", tmp_path / "x.tgsp", "--sign", "rel")
    assert code == 3 and "revoked" in err and not (tmp_path / "x.tgsp").exists()


def test_import_trusts_a_foreign_key(setup, tmp_path, capsys, monkeypatch):
    pub, pkg = tmp_path / "rel.pub.json", tmp_path / "a.tgsp"
    run(capsys, "key", "export-public", "rel", "-o", pub)
    run(capsys, "tgsp", "build", setup, "-o", pkg, "--sign", "rel")
    monkeypatch.setenv("TGFLOW_HOME", str(tmp_path / "other"))
    assert run(capsys, "tgsp", "verify", pkg)[0] == 1  # empty trust store: fail closed
    assert run(capsys, "tgsp", "verify", pkg, "--trusted", pub)[0] == 0
    assert run(capsys, "key", "import", pub, "--name", "upstream")[0] == 0
    assert run(capsys, "tgsp", "verify", pkg)[0] == 0


@pytest.mark.parametrize("argv,code,needle", [
    (["tgsp", "verify", "missing.tgsp"], 2, "does not exist"),
    (["tgsp", "build", "nope", "-o", "x.tgsp"], 2, "does not exist"),
    (["tgsp", "verify", "--bogus"], 2, "No such option"),
    (["key", "generate", "../x"], 2, "not allowed"),
    (["key", "show", "ghost"], 3, "no key named"),
    (["tgsp", "build", ".", "-o", "x.tgsp", "--expires", "soon"], 2, "ISO 8601"),
])
def test_bad_input_exit_codes(home, tmp_path, capsys, monkeypatch, argv, code, needle):
    monkeypatch.chdir(tmp_path)
    got, out, err = run(capsys, *argv)
    assert got == code and needle in err + out


def test_json_errors_are_machine_readable(home, capsys):
    code, out, _ = run(capsys, "key", "show", "ghost", "--json")
    doc = json.loads(out)
    assert code == 3 and doc["ok"] is False and doc["error"]["exit_code"] == 3 and doc["error"]["hint"]


def test_debug_shows_traceback(home, capsys):
    code, _, err = run(capsys, "--debug", "key", "show", "ghost")
    assert code == 3 and "Traceback" in err


def test_wrong_passphrase_exit_3_and_no_output(setup, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("TGFLOW_PASSPHRASE", "wrong")
    code, _, err = run(capsys, "tgsp", "build", setup, "-o", tmp_path / "a.tgsp", "--sign", "rel")
    assert code == 3 and "wrong passphrase" in err
    assert not (tmp_path / "a.tgsp").exists()


def test_subprocess_batch_mode_never_hangs_on_prompt(home, tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("TGFLOW_PASSPHRASE")}
    env["TGFLOW_HOME"] = str(home)
    proc = subprocess.run(tgflow_exe() + ["key", "generate", "k"], env=env, stdin=subprocess.DEVNULL,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 3
    assert "no passphrase" in proc.stderr and "TGFLOW_PASSPHRASE" in proc.stderr


def test_subprocess_wrong_recipient_exit_4(setup, tmp_path, capsys):
    run(capsys, "key", "generate", "eve", "--type", "recipient")
    pkg = tmp_path / "a.tgsp"
    run(capsys, "tgsp", "build", setup, "-o", pkg, "--recipient", "ops", "--sign", "rel")
    proc = subprocess.run(tgflow_exe() + ["tgsp", "unpack", str(pkg), "-o", str(tmp_path / "o"), "--identity", "eve"],
                          capture_output=True, text=True, timeout=60, env=dict(os.environ))
    assert proc.returncode == 4 and "is a recipient of this package" in proc.stderr
    assert not (tmp_path / "o").exists()


def test_verify_path_never_imports_torch(setup, tmp_path, capsys):
    pkg = tmp_path / "a.tgsp"
    run(capsys, "tgsp", "build", setup, "-o", pkg, "--sign", "rel")
    code = ("import sys; from tgflow_cli.main import main; rc = main(['tgsp', 'verify', %r]); "
            "bad = [m for m in ('torch', 'peft', 'transformers', 'numpy') if m in sys.modules]; "
            "print('HEAVY', bad); sys.exit(rc)" % str(pkg))
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, env=dict(os.environ))
    assert proc.returncode == 0 and "HEAVY []" in proc.stdout


def test_help_lists_examples(capsys):
    for group in ("key", "tgsp"):
        code, out, _ = run(capsys, group, "--help")
        assert code == 0
    code, out, _ = run(capsys, "tgsp", "verify", "--help")
    assert "Example" in out


def test_identity_file_for_an_air_gapped_machine(setup, home, tmp_path, capsys, monkeypatch):
    """--identity FILE: the recipient key file carried by hand, held to the keyring's permissions (issue 30)."""
    import shutil
    import stat

    pkg = tmp_path / "a.tgsp"
    assert run(capsys, "tgsp", "build", setup, "-o", pkg, "--recipient", "ops", "--sign", "rel")[0] == 0
    assert run(capsys, "key", "export-public", "rel", "-o", tmp_path / "rel.pub.json")[0] == 0
    carried = tmp_path / "usb" / "ops.key.json"
    carried.parent.mkdir()
    shutil.copyfile(home / "keys" / "ops.json", carried)
    monkeypatch.setenv("TGFLOW_HOME", str(tmp_path / "airgap"))  # a machine whose keyring has no key at all
    unpack = ["tgsp", "unpack", pkg, "--identity", carried, "--trusted", tmp_path / "rel.pub.json"]
    carried.chmod(0o644)
    code, _, err = run(capsys, *unpack, "-o", tmp_path / "o1")
    assert code == 3 and "chmod 600" in err and not (tmp_path / "o1").exists()
    link = tmp_path / "usb" / "link.json"
    link.symlink_to(carried)
    code, _, err = run(capsys, "tgsp", "unpack", pkg, "--identity", link, "--trusted", tmp_path / "rel.pub.json",
                       "-o", tmp_path / "o2")
    assert code == 3 and "link" in err
    carried.chmod(stat.S_IRUSR | stat.S_IWUSR)
    code, _, err = run(capsys, *unpack, "-o", tmp_path / "o3")
    assert code == 0, err
    assert (tmp_path / "o3" / "adapter_config.json").read_bytes() == (setup / "adapter_config.json").read_bytes()
    code, _, err = run(capsys, *unpack[:3], "--identity", tmp_path / "usb" / "nope.json", *unpack[5:], "-o",
                       tmp_path / "o4")
    assert code == 3 and "does not exist" in err


def test_a_hostile_identity_file_is_a_key_problem(setup, home, tmp_path, capsys):
    import json as json_

    pkg = tmp_path / "a.tgsp"
    assert run(capsys, "tgsp", "build", setup, "-o", pkg, "--recipient", "ops", "--sign", "rel")[0] == 0
    doc = json_.loads((home / "keys" / "ops.json").read_text())
    cases = {"no-sealed": {**doc, "versions": [{k: v for k, v in doc["versions"][0].items() if k != "sealed"}]},
             "long-name": {**doc, "name": "x" * 5000}}
    for name, bad in cases.items():
        f = tmp_path / f"{name}.json"
        f.write_text(json_.dumps(bad))
        f.chmod(0o600)
        code, _, err = run(capsys, "tgsp", "unpack", pkg, "--identity", f, "-o", tmp_path / name)
        assert code == 3 and "internal error" not in err and "x" * 100 not in err, (name, err)
    deep = tmp_path / "deep.json"
    deep.write_bytes(b"[" * 100_000)
    deep.chmod(0o600)
    code, _, err = run(capsys, "tgsp", "unpack", pkg, "--identity", deep, "-o", tmp_path / "deep")
    assert code == 3 and "internal error" not in err


def test_state_dash_is_refused(setup, tmp_path, capsys):
    """'--state -' wrote a file named '-' and read stdin the next time (issue 30 review)."""
    pkg = tmp_path / "a.tgsp"
    assert run(capsys, "tgsp", "build", setup, "-o", pkg, "--sign", "rel")[0] == 0
    for argv in (["tgsp", "verify", pkg], ["tgsp", "unpack", pkg, "-o", tmp_path / "o"],
                 ["route", "resolve", "support", "--registry", tmp_path]):
        code, _, err = run(capsys, *argv, "--state", "-")
        assert code == 2 and "--state - cannot be used here" in err, argv
    assert not (tmp_path / "o").exists()


def test_a_missing_submodule_is_not_a_missing_extra():
    from tgflow_cli.errors import classify

    for name in ("torch._C", "transformers.models.llama.modeling_llama", "regex", "peft.tuners.lora.layer"):
        message, _, code = classify(ModuleNotFoundError(f"No module named {name!r}", name=name))
        assert code == 1 and "pip install" not in message, name  # a broken install: the traceback matters
