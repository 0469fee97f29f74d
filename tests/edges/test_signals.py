"""Issue 10, item 1: signals at every point, through the installed console script."""

from __future__ import annotations

import os
import pty
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import tgsp
from tgsp.keyring import Keyring

from tests.helpers import PASS, pp, tgflow_exe

BIG = 96 << 20  # enough that hashing or decrypting takes a while on 2 cores


@pytest.fixture(scope="module")
def big(tmp_path_factory):
    root = tmp_path_factory.mktemp("big")
    kr = Keyring(root / "home")
    kr.generate("rel", "signing", pp)
    kr.generate("ops", "recipient", pp)
    src = root / "src"
    src.mkdir()
    marker = os.urandom(64)
    with open(src / "weights.bin", "wb") as f:
        f.write(marker)
        for _ in range(BIG >> 20):
            f.write(os.urandom(1 << 20))
    signed, sealed = root / "signed.tgsp", root / "sealed.tgsp"
    tgsp.build(src, signed, signers=[kr.signer("rel", pp)])
    tgsp.build(src, sealed, signers=[kr.signer("rel", pp)], recipients=[kr.public_file("ops").key])

    class B:
        pass
    b = B()
    b.root, b.home, b.signed, b.sealed, b.marker, b.src = root, root / "home", signed, sealed, marker, src
    b.env = {**os.environ, "TGFLOW_HOME": str(b.home), "TGFLOW_PASSPHRASE": PASS, "PYTHONUNBUFFERED": "1"}
    b.env.pop("CI", None)
    return b


def _wait_for(pred, timeout=60.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return True
        time.sleep(0.002)
    return False


def _has_open(pid: int, path: Path) -> bool:
    try:
        return any(os.readlink(f"/proc/{pid}/fd/{fd}") == str(path) for fd in os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return False


def _live_sigint() -> None:
    """As in a login shell: Ctrl-C is live even if this test runs under a parent that ignores it
    (a non-interactive shell's background job does; exec keeps an ignored signal ignored)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _start(argv, env, **kw):
    return subprocess.Popen(tgflow_exe() + [str(a) for a in argv], env=env, stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, preexec_fn=_live_sigint, **kw)


def test_sigint_during_verify_exits_130_not_0(big):
    proc = _start(["tgsp", "verify", big.signed], big.env)
    assert _wait_for(lambda: _has_open(proc.pid, big.signed))
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, (out, err)
    assert b"error: interrupted" in err and b"VERIFIED" not in out


def test_verify_and_deploy_gate_never_passes_when_interrupted(big):
    for sig in (signal.SIGINT, signal.SIGTERM):
        proc = subprocess.Popen(["bash", "-c", f"{' '.join(tgflow_exe())} tgsp verify {big.signed} && echo OK"],
                                env=big.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True,
                                preexec_fn=_live_sigint)
        child = lambda: [int(p) for p in Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split()]  # noqa: E731
        assert _wait_for(lambda: child() and _has_open(child()[0], big.signed))
        os.killpg(proc.pid, sig)
        out, _ = proc.communicate(timeout=60)
        assert b"OK" not in out and proc.returncode != 0


def _writing_under(pid: int, folder: Path) -> bool:
    """The process holds a file open for writing under ``folder`` (named, or unnamed: O_TMPFILE)."""
    try:
        return any(os.readlink(f"/proc/{pid}/fd/{fd}").startswith(str(folder) + "/") for fd in os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return False


def test_sigterm_mid_unpack_leaves_no_plaintext(big, tmp_path):
    out_dir = tmp_path / "adapter"
    proc = _start(["tgsp", "unpack", big.sealed, "-o", out_dir, "--identity", "ops"], big.env)
    staging = lambda: [p for p in tmp_path.iterdir() if p.name.endswith(".unpack")]  # noqa: E731
    assert _wait_for(lambda: staging() and _writing_under(proc.pid, staging()[0]))
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 143 and b"error: terminated" in err
    assert list(tmp_path.iterdir()) == []  # no staging folder, no output
    for f in big.root.rglob("*"):  # and no decrypted byte beside the package either
        if f.is_file() and f.parent != big.src and f != big.signed:  # (the plain package holds it by design)
            assert big.marker not in f.read_bytes()[:1 << 16]


def test_after_kill_9_the_next_run_removes_only_its_own_stale_temporaries(big, tmp_path):
    proc = _start(["tgsp", "unpack", big.sealed, "-o", tmp_path / "a", "--identity", "ops"], big.env)
    staging = lambda: [p for p in tmp_path.iterdir() if p.name.endswith(".unpack")]  # noqa: E731
    assert _wait_for(lambda: staging())
    proc.kill()
    proc.wait()
    left = staging()
    assert left  # kill -9 runs no cleanup
    foreign = tmp_path / ".b.tgflow~otherhost~1.abcdefgh.unpack"  # not provably ours: kept
    foreign.mkdir()
    subprocess.run(tgflow_exe() + ["tgsp", "unpack", str(big.signed), "-o", str(tmp_path / "b")], env=big.env,
                   check=True, capture_output=True)
    assert not any(p.exists() for p in left) and foreign.exists()


def test_kill_9_mid_unpack_leaves_no_decrypted_byte_on_disk(big, tmp_path):
    """Decrypted files have no name until every one is written and checked (O_TMPFILE), so a
    SIGKILL, which runs no cleanup, leaves nothing to read (issue 26)."""
    for attempt in range(5):  # killed mid-unpack at least once (an unpack that wins the race finished cleanly)
        work = tmp_path / str(attempt)
        work.mkdir()
        proc = _start(["tgsp", "unpack", big.sealed, "-o", work / "a", "--identity", "ops"], big.env)
        staging = lambda: [p for p in work.iterdir() if p.name.endswith(".unpack")]  # noqa: E731
        assert _wait_for(lambda: staging() and _writing_under(proc.pid, staging()[0]))
        proc.kill()
        proc.wait()
        if not (work / "a").exists():
            break
    else:
        pytest.skip("every unpack finished before it could be killed")
    left = [f for f in work.rglob("*") if f.is_file()]
    assert staging() and left == [], left  # the staging folder remains (no cleanup ran), with no file in it


def test_sigterm_mid_build_leaves_no_temporary(big, tmp_path):
    out = tmp_path / "p.tgsp"
    proc = _start(["tgsp", "build", big.src, "-o", out, "--sign", "rel", "--recipient", "ops"], big.env)
    assert _wait_for(lambda: any(p.name.endswith(".tmp") for p in tmp_path.iterdir()))
    proc.send_signal(signal.SIGTERM)
    proc.communicate(timeout=60)
    assert proc.returncode == 143 and list(tmp_path.iterdir()) == []


def test_ctrl_c_at_the_passphrase_prompt_exits_130(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("TGFLOW_PASSPHRASE")}
    env["TGFLOW_HOME"] = str(tmp_path / "h")
    pid, fd = pty.fork()
    if pid == 0:  # child: the real CLI on a terminal, with Ctrl-C live as in a login shell
        _live_sigint()
        os.execvpe(tgflow_exe()[0], tgflow_exe() + ["key", "generate", "k"], env)
    seen = b""
    end = time.monotonic() + 60
    while b"Passphrase" not in seen and time.monotonic() < end:
        try:
            seen += os.read(fd, 1024)
        except OSError:
            break
    assert b"Passphrase" in seen
    os.write(fd, b"\x03")  # Ctrl-C, through the terminal's line discipline
    end = time.monotonic() + 60
    while (done := os.waitpid(pid, os.WNOHANG))[0] == 0 and time.monotonic() < end:
        time.sleep(0.05)
    if done[0] == 0:  # never hang the suite: a child still waiting is a failure
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        pytest.fail("Ctrl-C at the prompt did not end the command")
    assert os.waitstatus_to_exitcode(done[1]) == 130
    assert not (tmp_path / "h" / "keys" / "k.json").exists()


@pytest.mark.parametrize("which", ["atomic_file", "private_dir"])
def test_a_signal_the_instant_a_temporary_is_created_leaves_nothing(tmp_path, monkeypatch, which):
    """SIGTERM delivered right as mkstemp/mkdtemp returns: the cleanup must already know the name."""
    import tempfile as tf

    from tgsp import atomic

    class Stop(BaseException):
        pass

    def raise_stop(signum, frame):
        raise Stop

    real = {"mkstemp": tf.mkstemp, "mkdtemp": tf.mkdtemp}

    def and_signal(name):
        def make(*a, **kw):
            out = real[name](*a, **kw)
            os.kill(os.getpid(), signal.SIGTERM)  # pending now; raised as soon as signals are let through
            return out
        return make

    previous = signal.signal(signal.SIGTERM, raise_stop)
    try:
        monkeypatch.setattr(tf, "mkstemp", and_signal("mkstemp"))
        monkeypatch.setattr(tf, "mkdtemp", and_signal("mkdtemp"))
        with pytest.raises(Stop):
            if which == "atomic_file":
                with atomic.atomic_file(tmp_path / "out.bin") as f:
                    f.write(b"never kept")
            else:
                with atomic.private_dir(tmp_path / "out"):
                    pass
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert list(tmp_path.iterdir()) == []


def test_sigterm_while_the_cli_is_still_loading_ends_as_terminated(tmp_path):
    """The console script catches SIGTERM before it imports typer, rich or any command module
    (issue 30: a loaded machine took over a second to get there, and the process died with -15)."""
    code = (
        "import os, signal, sys\n"
        "import tgflow_cli.start as start\n"
        "real = signal.signal\n"
        "def hook(s, h):\n"
        "    out = real(s, h)\n"
        "    if s == start.EARLY[-1]:  # the last early handler is in; the CLI is not loaded\n"
        "        signal.signal = real\n"
        "        sys.stderr.write('loaded: %s\\n' % ('tgflow_cli.main' in sys.modules))\n"
        "        os.kill(os.getpid(), signal.SIGTERM)\n"
        "    return out\n"
        "signal.signal = hook\n"
        "sys.argv = ['tgflow', 'key', 'list']\n"
        "start.entry()\n")
    env = {**os.environ, "TGFLOW_HOME": str(tmp_path / "home")}
    run = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert "loaded: False" in run.stderr
    assert run.returncode == 143, run.stderr
    assert "terminated by signal" in run.stderr
