"""Issue 16: the conventions CI users and operators expect, one test each,
through the real entry point (and the installed script where a terminal or
a pipe is part of the convention)."""

from __future__ import annotations

import json
import os
import pty
import re
import subprocess
import time
from pathlib import Path

import pytest

from tgflow_cli.main import command, main
from tests.helpers import PASS, cli, make_adapter, tgflow_exe


run = cli  # the real entry point, in-process


@pytest.fixture
def kit(home, tmp_path, capsys):
    run(capsys, "key", "generate", "rel")
    run(capsys, "key", "generate", "ops", "--type", "recipient")
    src = make_adapter(tmp_path / "src")
    pkg = tmp_path / "p.tgsp"
    assert run(capsys, "tgsp", "build", src, "-o", pkg, "--sign", "rel", "--recipient", "ops")[0] == 0
    return tmp_path, src, pkg


def _env(home: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TGFLOW_")}
    return {**env, "TGFLOW_HOME": str(home), "TGFLOW_PASSPHRASE": PASS}


def test_dash_h_and_dash_dash_help(capsys):
    for argv in (["-h"], ["tgsp", "-h"], ["tgsp", "verify", "-h"], ["key", "generate", "--help"]):
        code, out, _ = run(capsys, *argv)
        assert code == 0 and "Usage: tgflow" in out, argv


def test_version_flag_and_command(capsys):
    code, out, _ = run(capsys, "-V")
    assert code == 0 and re.fullmatch(r"tgflow \S+\n", out)
    code, out, _ = run(capsys, "version", "--json")
    info = json.loads(out)
    assert code == 0 and info["formats"] == ["tgsp/1"]
    assert info["format_libraries"]["cryptography"] and info["format_libraries"]["rfc8785"]


@pytest.mark.parametrize("shell,marker", [("bash", "complete -o"), ("zsh", "compdef"), ("fish", "complete --command")])
def test_completion_scripts_and_live_completion(shell, marker, capsys):
    code, out, _ = run(capsys, "completion", shell)
    assert code == 0 and marker in out and "_TGFLOW_COMPLETE" in out
    env = {**os.environ, "_TGFLOW_COMPLETE": "complete_bash", "COMP_WORDS": "tgflow tgsp ver", "COMP_CWORD": "2"}
    proc = subprocess.run(tgflow_exe(), env=env, capture_output=True, text=True)
    assert proc.returncode == 0 and proc.stdout.split() == ["verify"]


def test_quiet_and_verbose(kit, capsys):
    _, _, pkg = kit
    code, out, err = run(capsys, "-q", "tgsp", "verify", pkg)
    assert code == 0 and out == "" and err == ""
    code, out, err = run(capsys, "-v", "tgsp", "verify", pkg)
    assert code == 0 and "VERIFIED" in out and "trusting 2 key(s)" in err
    code, out, err = run(capsys, "-q", "tgsp", "verify", kit[1])  # errors still print under -q
    assert code == 2 and err.startswith("error:")


def test_global_flags_after_the_subcommand(kit, tmp_path, capsys, monkeypatch):
    _, _, pkg = kit
    home = os.environ["TGFLOW_HOME"]
    monkeypatch.setenv("TGFLOW_HOME", str(tmp_path / "empty"))
    assert run(capsys, "tgsp", "verify", pkg)[0] == 1  # nobody trusted in the empty keyring
    code, out, _ = run(capsys, "tgsp", "verify", pkg, "--home", home, "-q", "--debug")
    assert code == 0 and out == ""
    assert run(capsys, "tgsp", "verify", pkg, f"--home={home}", "--json")[0] == 0


def test_dash_for_stdin_and_stdout(kit, tmp_path):
    home, (_, src, pkg) = Path(os.environ["TGFLOW_HOME"]), kit
    env = _env(home)
    cli = tgflow_exe()
    data = pkg.read_bytes()
    assert subprocess.run(cli + ["tgsp", "verify", "-", "-q"], input=data, env=env).returncode == 0
    inspected = subprocess.run(cli + ["tgsp", "inspect", "-", "--json"], input=data, env=env, capture_output=True)
    assert json.loads(inspected.stdout)["manifest"]["route"] == "default"
    built = subprocess.run(cli + ["tgsp", "build", str(src), "-o", "-", "--sign", "rel"], env=env, capture_output=True)
    assert built.returncode == 0 and built.stdout[:7] == b"payload"  # the ustar archive itself, on stdout
    assert b"built <stdout>" in built.stderr
    (tmp_path / "piped.tgsp").write_bytes(built.stdout)
    assert subprocess.run(cli + ["tgsp", "verify", str(tmp_path / "piped.tgsp"), "-q"], env=env).returncode == 0
    pub = subprocess.run(cli + ["key", "export-public", "rel", "-o", "-"], env=env, capture_output=True).stdout
    other = {**env, "TGFLOW_HOME": str(tmp_path / "other")}
    assert subprocess.run(cli + ["key", "import", "-", "--name", "friend"], input=pub, env=other).returncode == 0
    assert subprocess.run(cli + ["tgsp", "verify", str(pkg), "-q"], env=other).returncode == 0
    no_pp = {k: v for k, v in env.items() if k != "TGFLOW_PASSPHRASE"}
    signed = subprocess.run(cli + ["tgsp", "sign", str(tmp_path / "piped.tgsp"), "--key", "rel", "--passphrase-file",
                                   "-"], input=(PASS + "\n").encode(), env=no_pp, capture_output=True)
    assert signed.returncode == 0, signed.stderr


def test_several_packages_at_once(kit, tmp_path, capsys):
    t, src, pkg = kit
    bad = tmp_path / "bad.tgsp"
    data = bytearray(pkg.read_bytes())
    data[700] ^= 1
    bad.write_bytes(bytes(data))
    code, out, _ = run(capsys, "tgsp", "verify", pkg, pkg, "--json")
    doc = json.loads(out)
    assert code == 0 and doc["ok"] and len(doc["packages"]) == 2
    code, out, err = run(capsys, "tgsp", "verify", pkg, bad, "--json")
    doc = json.loads(out)
    assert code == 1 and not doc["ok"] and [p["ok"] for p in doc["packages"]] == [True, False]
    assert "1 of 2 packages failed" in err


def test_verify_json_lists_signers_as_fields(kit, capsys):
    code, out, _ = run(capsys, "tgsp", "verify", kit[2], "--json")
    (signer,) = json.loads(out)["signers"]
    assert signer["name"] == "rel" and signer["version"] == 1 and signer["trusted"] is True
    assert [a["algorithm"] for a in signer["algorithms"]] == ["ed25519", "ml-dsa-65"]
    assert signer["custody"] == {"ed25519": "software", "ml-dsa-65": "software"} and len(signer["keyid"]) == 64


def test_help_shows_no_python_type_names(capsys):
    def walk(cmd, path):
        yield path
        for name in cmd.list_commands(None) if hasattr(cmd, "list_commands") else []:  # lazy groups load here
            yield from walk(cmd.get_command(None, name), path + [name])
    for path in walk(command(), []):
        code, out, _ = run(capsys, *path, "--help")
        assert code == 0
        assert not re.search(r"<(bool|str|int|float|path|file|list\[[^>]*\]|[a-z]+ range)>", out), (path, out)


def test_build_refuses_to_overwrite_without_force(kit, capsys):
    t, src, pkg = kit
    before = pkg.read_bytes()
    code, _, err = run(capsys, "tgsp", "build", src, "-o", pkg)
    assert code == 2 and "already exists" in err and pkg.read_bytes() == before
    assert run(capsys, "tgsp", "build", src, "-o", pkg, "--force")[0] == 0 and pkg.read_bytes() != before


def test_config_file_defaults_and_precedence(kit, tmp_path, capsys):
    t, src, pkg = kit
    home = Path(os.environ["TGFLOW_HOME"])
    run(capsys, "key", "generate", "other")
    (home / "config.toml").write_text('[tgsp]\ntrusted = ["other"]\nsign = ["rel"]\nrecipients = ["ops"]\n')
    code, _, err = run(capsys, "tgsp", "verify", pkg)  # the file says: trust only "other"
    assert code == 1 and "no trusted signer" in err
    assert run(capsys, "tgsp", "verify", pkg, "--trusted", "rel")[0] == 0  # the flag wins
    built = tmp_path / "from-config.tgsp"
    assert run(capsys, "tgsp", "build", src, "-o", built, "--json")[0] == 0  # --sign/--recipient from the file
    code, out, _ = run(capsys, "tgsp", "inspect", built, "--json")
    m = json.loads(out)["manifest"]
    assert [s["name"] for s in m["signers"]] == ["rel"] and m["encryption"]["recipients"]
    (home / "config.toml").write_text('[tgsp]\ntrustd = ["rel"]\n')
    code, _, err = run(capsys, "tgsp", "verify", pkg)
    assert code == 2 and "did you mean tgsp.trusted?" in err


def _plant(kind: str, path: Path) -> None:
    if kind == "folder":  # what a Kubernetes subPath mount of a missing file creates
        path.mkdir()
    elif kind == "fifo":
        os.mkfifo(path)
    elif kind == "link to /dev/zero":
        path.symlink_to("/dev/zero")
    elif kind == "dangling link":
        path.symlink_to(path.parent / "gone.toml")
    elif kind == "nesting bomb":
        path.write_text("a = " + "[" * 100_000 + "]" * 100_000 + "\n")
    else:  # a value outside the setting's choices
        path.write_text('[tgsp]\nrequire_hardware = "none"\n')


@pytest.mark.parametrize("kind", ["folder", "fifo", "link to /dev/zero", "dangling link", "nesting bomb", "bad choice"])
def test_a_config_that_is_not_a_readable_toml_file_is_refused(kit, capsys, kind):
    """Skipping it would drop its trust pins (issue 26): a clean exit 2, never a silent default."""
    t, src, pkg = kit
    home = Path(os.environ["TGFLOW_HOME"])
    _plant(kind, home / "config.toml")
    code, _, err = run(capsys, "tgsp", "verify", pkg, "--trusted", "rel")
    assert code == 2 and "config.toml" in err and "internal error" not in err, err


def test_a_config_behind_a_link_is_read(kit, capsys):
    """A ConfigMap mounts its files as links: a link to a TOML file is that file."""
    t, src, pkg = kit
    home = Path(os.environ["TGFLOW_HOME"])
    (t / "real.toml").write_text('[tgsp]\ntrusted = ["nobody"]\n')
    (home / "config.toml").symlink_to(t / "real.toml")
    code, _, err = run(capsys, "tgsp", "verify", pkg)
    assert code == 3 and "nobody" in err  # the linked file's pin was applied


def _pty_run(argv: list[str], env: dict, answers: list[str]) -> tuple[int, str]:
    import select
    import signal

    pid, fd = pty.fork()
    if pid == 0:
        signal.signal(signal.SIGINT, signal.SIG_DFL)  # a background parent may have left it ignored
        os.execvpe(argv[0], argv, env)

    seen, sent, mark = b"", 0, 0
    end = time.monotonic() + 60
    while time.monotonic() < end:
        ready, _, _ = select.select([fd], [], [], 1.0)
        if not ready:
            continue
        try:
            chunk = os.read(fd, 1024)
        except OSError:
            break
        if not chunk:
            break
        seen += chunk
        fresh = seen[mark:]
        # Answer each prompt once it is on screen: getpass flushes input typed ahead of it.
        if sent < len(answers) and b"assphrase" in fresh and fresh.rstrip().endswith(b":"):
            os.write(fd, answers[sent].encode() + b"\n")
            sent += 1
            mark = len(seen)
    else:
        os.kill(pid, signal.SIGKILL)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status), seen.decode(errors="replace")


def test_prompts_name_the_key_and_re_ask(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("TGFLOW_")}
    env["TGFLOW_HOME"] = str(tmp_path / "h")
    code, screen = _pty_run(tgflow_exe() + ["key", "generate", "release"], env,
                            ["short", "a long enough passphrase", "a different one!!", "a long enough passphrase",
                             "a long enough passphrase"])
    assert code == 0, screen
    assert "Passphrase for key release:" in screen and "at least 12 characters" in screen
    assert "did not match" in screen and "no terminal" not in screen
    assert (tmp_path / "h" / "keys" / "release.json").is_file()


def test_weak_passphrase_for_a_new_key_needs_the_flag(home, capsys, monkeypatch):
    monkeypatch.setenv("TGFLOW_PASSPHRASE", "short")
    code, _, err = run(capsys, "key", "generate", "weak")
    assert code == 3 and "at least 12 characters" in err
    assert run(capsys, "key", "generate", "weak", "--allow-weak-passphrase")[0] == 0


def test_dash_for_unpack_and_report(kit, tmp_path):
    home, (_, src, pkg) = Path(os.environ["TGFLOW_HOME"]), kit
    env, cli_ = _env(home), tgflow_exe()
    data = pkg.read_bytes()
    out = tmp_path / "unpacked"
    proc = subprocess.run(cli_ + ["tgsp", "unpack", "-", "-o", str(out), "--identity", "ops"], input=data, env=env,
                          capture_output=True)
    assert proc.returncode == 0 and (out / "adapter_config.json").read_bytes() == (src / "adapter_config.json").read_bytes()
    page = subprocess.run(cli_ + ["tgsp", "report", "-", "-o", "-"], input=data, env=env, capture_output=True)
    assert page.returncode == 0 and page.stdout.startswith(b"<!doctype html>") and b"VERIFIED" in page.stdout


def test_build_to_stdout_refuses_a_terminal(tmp_path):
    """`build -o -` wrote binary to a terminal; age refuses that, and so does tgflow (issue 30)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TGFLOW_")}
    env["TGFLOW_HOME"] = str(tmp_path / "h")
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "a.txt").write_text("hello\n")
    code, screen = _pty_run(tgflow_exe() + ["tgsp", "build", str(tmp_path / "src"), "-o", "-"], env, [])
    assert code == 2, screen
    assert "refusing to write a binary package to a terminal" in screen and "ustar" not in screen


def test_the_program_s_own_text_is_not_escaped(tmp_path, capsys):
    """'[progress.description]packing' and click's 'Choose from:\\x0a\\x09' (issue 30): escape data only."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TGFLOW_")}
    env.update(TGFLOW_HOME=str(tmp_path / "h"), TGFLOW_PASSPHRASE="a long enough passphrase")
    assert subprocess.run(tgflow_exe() + ["key", "generate", "rel"], env=env, capture_output=True).returncode == 0
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "big.bin").write_bytes(os.urandom(8 << 20))
    code, screen = _pty_run(tgflow_exe() + ["tgsp", "build", str(tmp_path / "src"), "-o", str(tmp_path / "p.tgsp"),
                                            "--sign", "rel"], env, [])
    assert code == 0, screen
    assert "[progress" not in screen and "\\x" not in screen
    code, _, err = run(capsys, "completion")
    assert code == 2 and "Choose from: bash, zsh, fish" in err and "\\x0a" not in err and "\\x09" not in err


def test_did_you_mean_for_key_names_and_backends(home, capsys):
    assert run(capsys, "key", "generate", "release")[0] == 0
    code, _, err = run(capsys, "tgsp", "build", str(home), "-o", str(home / "x.tgsp"), "--sign", "relase")
    assert code == 3 and "did you mean 'release'?" in err
    spec = Path(__file__).resolve().parents[2] / "examples" / "run_spec.json"
    code, _, err = run(capsys, "export", "--backend", "kubeflow", "--spec", spec, "-o", home / "o")
    assert code == 2 and "did you mean k8s?" in err and "Kubeflow Trainer" in err


def test_piped_tables_are_plain_and_whole_and_o_takes_json_yaml_wide(home, capsys):
    """Piped tables kept box art and cut ids at 80 columns, so two keys could read alike (issue 30)."""
    import yaml

    for name in ("aggregator-eu-west-1-primary", "aggregator-eu-west-1-standby"):
        assert run(capsys, "key", "generate", name)[0] == 0
    code, out, _ = run(capsys, "key", "list")
    lines = out.splitlines()
    assert code == 0 and lines[0].split() == ["NAME", "TYPE", "KEY", "ID", "VERSION", "CREATED", "PRIVATE", "REVOKED"]
    assert not any(ch in out for ch in "┃│━─┏") and "…" not in out
    listed = json.loads(run(capsys, "key", "list", "--json")[1])
    for k in listed:  # whole names and whole key ids, one row each
        assert any(k["name"] in row and k["keyid"] in row for row in lines[1:])
    code, out, _ = run(capsys, "key", "list", "-o", "yaml")
    assert code == 0 and yaml.safe_load(out) == listed
    code, out, _ = run(capsys, "key", "list", "-o", "json")
    assert code == 0 and json.loads(out) == listed
    assert run(capsys, "key", "list", "-o", "wide")[0] == 0
    code, _, err = run(capsys, "key", "list", "-o", "xml")
    assert code == 2 and "-o 'xml' is not one of json, yaml, wide" in err


def test_verify_and_inspect_take_o_yaml(kit, capsys):
    import yaml

    _, _, pkg = kit
    for cmd in ("verify", "inspect"):
        code, out, _ = run(capsys, "tgsp", cmd, pkg, "--json")
        as_json = json.loads(out)
        code2, out2, _ = run(capsys, "tgsp", cmd, pkg, "-o", "yaml")
        assert code == code2 == 0 and yaml.safe_load(out2) == as_json
