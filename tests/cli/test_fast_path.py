"""The fast path of `tgflow tgsp verify` and `tgflow route resolve` (tgflow_cli/fast.py):
every line it accepts means what the full CLI makes of it, it prints and exits as the full
CLI does, and it loads no typer, rich or training stack."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from tgflow_cli import fast
from tgflow_cli.main import command, hoist, main

ROOT = Path(__file__).resolve().parents[2]

_TOKENS = st.sampled_from([
    "a.tgsp", "b.tgsp", "-", "--json", "-q", "--quiet", "-v", "-vv", "-vvv", "--verbose", "--debug", "--trusted", "rel",
    "--trusted=ops.pub.json", "--revocations", "r.json", "--min-version", "3", "-2", "x1", "--state", "s.json",
    "--state=st", "--route", "support", "--kind", "adapter", "--require-hardware", "ed25519", "all", "bogus",
    "-o", "yaml", "--output-format=wide", "--home", "h", "--home=h2", "-h", "--", "-qv", "--unknown", "",
    "tgsp", "verify", "--route=", "--min-version=+4", "--min-version=0x1", "--alias", "staging", "--registry",
    "reg", "--spec", "s.json", "route", "resolve",
])


def _real(argv: list[str]) -> dict | None:
    """What the full CLI parses `argv` into (root and command values), or None if it refuses it."""
    cmd = command()
    try:
        ctx = cmd.make_context("tgflow", hoist(argv))
        name, sub, rest = cmd.resolve_command(ctx, [*ctx._protected_args, *ctx.args])
        sctx = sub.make_context(name, rest, parent=ctx)
        name, leaf, rest = sub.resolve_command(sctx, [*sctx._protected_args, *sctx.args])
        lctx = leaf.make_context(name, rest, parent=sctx)
    except Exception:  # usage errors: the fast path must have declined these
        return None
    p = lctx.params
    if leaf.name == "verify":
        mine = {"packages": list(p["packages"]), "trusted": p["trusted"] or None,
                "revocations": list(p["revocations"]) if p["revocations"] else None,
                "min_version": p["min_version"], "state": p["state"], "route": p["route"], "kind": p["kind"],
                "hardware": p["require_hardware"], "json_out": p["json_out"], "fmt": p["fmt"]}
    else:
        mine = {"route": p["route"], "alias": p["alias"], "state": p["state"], "trusted": p["trusted"] or None,
                "registry": p["registry"], "spec": p["spec"], "json_out": p["json_out"]}
    return {"globals": {k: ctx.params[k] for k in ("debug", "home", "quiet", "verbose")}, "command": mine}


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(before=st.lists(_TOKENS, max_size=3), after=st.lists(_TOKENS, max_size=8),
       which=st.sampled_from([["tgsp", "verify"], ["route", "resolve"]]))
def test_every_line_the_fast_path_takes_parses_the_same_under_typer(monkeypatch, tmp_path, before, after, which):
    monkeypatch.delenv("TGFLOW_HOME", raising=False)
    monkeypatch.delenv("TGFLOW_DEBUG", raising=False)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "st").mkdir(exist_ok=True)  # --state=st names a folder: the option refuses it
    (tmp_path / "reg").write_text("")  # --registry reg names a file: both paths take it; opening refuses it
    argv = before + which + after
    taken = _taken(argv)
    assert taken is None or taken == _real(argv), argv


def _taken(argv: list[str]) -> dict | None:
    """What the fast path would run `argv` with, or None where it hands the line to typer."""
    v = fast.parse(argv)
    if v is None:
        return None
    try:
        return fast.settle(v)
    except fast._Unsure:
        return None


def test_lines_the_os_or_typer_would_refuse_go_to_the_full_cli(tmp_path, monkeypatch):
    locked = tmp_path / "locked.tgsp"
    locked.write_bytes(b"x")
    monkeypatch.setattr(os, "access", lambda path, mode, **kw: Path(path) != locked)  # root reads everything
    assert fast.main(["tgsp", "verify", str(locked)], []) is None
    assert fast.main(["tgsp", "verify", "p", "--state", "a" * 300 + "/s.json"], []) is None  # ENAMETOOLONG
    assert fast.parse(["tgsp", "verify", "p", "-vvv"]) is None


def test_the_fast_path_takes_the_lines_ci_writes():
    for argv in (["tgsp", "verify", "p.tgsp"], ["tgsp", "verify", "p.tgsp", "--trusted", "rel.pub.json", "--json"],
                 ["--home", "h", "tgsp", "verify", "a", "b", "--state", "s.json", "--route", "r", "-o", "yaml"]):
        assert fast.parse(argv) is not None, argv
    assert fast.parse(["route", "resolve", "support", "--registry", "r", "--state", "s.json", "--json"]) is not None
    for argv in (["tgsp", "verify", "--help"], ["tgsp", "verify"], ["tgsp", "inspect", "p"], ["--json", "tgsp", "verify", "p"],
                 ["route", "resolve"], ["route", "resolve", "a", "b"], ["route", "resolve", "a", "--min-version", "1"]):
        assert fast.parse(argv) is None, argv


@pytest.mark.parametrize("tamper", [False, True])
@pytest.mark.parametrize("extra", [[], ["--json"], ["-o", "yaml"], ["-q"]])
def test_fast_and_full_cli_print_and_exit_alike(world, kit_home, capsys, tmp_path, tamper, extra):
    pkg = tmp_path / "p.tgsp"
    data = bytearray(world.bytes)
    if tamper:
        data[len(data) // 3] ^= 1
    pkg.write_bytes(data)
    argv = ["tgsp", "verify", str(pkg), *extra]
    code_fast = fast.main(argv, [])
    out_fast = capsys.readouterr()
    code_full = main(argv)
    out_full = capsys.readouterr()
    assert code_fast == code_full == (1 if tamper else 0)
    assert (out_fast.out, out_fast.err) == (out_full.out, out_full.err)
    assert ("REJECTED" if tamper else "VERIFIED") in out_full.out or extra


@pytest.fixture
def kit_home(world, monkeypatch):
    monkeypatch.setenv("TGFLOW_HOME", str(world.root / "home"))
    return world.root / "home"


_PROBE = ("import sys; sys.argv = ['tgflow'] + sys.argv[1:]\n"
          "from tgflow_cli.start import entry\n"
          "try:\n    entry()\nexcept SystemExit as e:\n    code = e.code\n"
          "heavy = sorted({m.split('.')[0] for m in sys.modules} & "
          "{'typer', 'rich', 'click', 'pydantic', 'torch', 'transformers', 'peft', 'tenseal', 'numpy', 'yaml'})\n"
          "sys.stderr.write('\\nPROBE ' + __import__('json').dumps([code, heavy]) + '\\n')\n")


def _loaded(args: list[str], home: Path) -> tuple[int, list[str]]:
    """A fresh interpreter runs `tgflow ARGS`: its exit code and the heavy packages it imported."""
    env = dict(os.environ, TGFLOW_HOME=str(home), PYTHONPATH=str(ROOT))
    res = subprocess.run([sys.executable, "-c", _PROBE, *args], env=env, capture_output=True, text=True, timeout=120)
    code, heavy = json.loads(res.stderr.rsplit("PROBE ", 1)[1])
    return code, heavy


def test_verify_and_version_load_no_typer_rich_or_training_stack(world, tmp_path):
    for args in (["tgsp", "verify", str(world.pkg), "--json"], ["tgsp", "verify", str(world.pkg)], ["--version"]):
        assert _loaded(args, world.root / "home") == (0, []), args
    env = dict(os.environ, TGFLOW_HOME=str(world.root / "home"), PYTHONPATH=str(ROOT))
    res = subprocess.run([sys.executable, "-m", "tgflow_cli", "--version"], env=env, capture_output=True, text=True,
                         timeout=60)
    from tgsp.version import TOOL

    assert res.returncode == 0 and res.stdout == TOOL + "\n"


def test_many_plain_lines_are_taken_and_all_parse_the_same(monkeypatch, tmp_path):
    """The property test above draws odd tokens too; this one shows the fast path really takes
    ordinary lines (so the comparison is not vacuous)."""
    import random

    monkeypatch.delenv("TGFLOW_HOME", raising=False)
    monkeypatch.chdir(tmp_path)
    words = ["a.tgsp", "-", "--json", "-q", "-v", "-vv", "--trusted", "rel", "--min-version", "3", "-2", "--state",
             "s.json", "--route", "r", "--kind", "adapter", "--require-hardware", "all", "-o", "yaml", "--debug",
             "--alias", "staging", "--registry", "reg"]
    rng, taken = random.Random(7), 0
    for _ in range(600):
        which = rng.choice([["tgsp", "verify"], ["route", "resolve", "support"]])
        argv = rng.choice([[], ["-q"], ["--home", "h"]]) + which + rng.choices(words, k=rng.randint(1, 7))
        mine = _taken(argv)
        if mine is not None:
            taken += 1
            assert mine == _real(argv), argv
    assert taken >= 80


def test_route_resolve_fast_and_full_agree_on_output_and_unchanged(world, kit_home, capsys, tmp_path):
    import tgsp
    from runners.state.registry import Registry

    from tests.helpers import make_adapter

    pkg = tmp_path / "v1.tgsp"
    tgsp.build(make_adapter(tmp_path / "src"), pkg, route="support", version=1, kind="adapter",
               recipients=[world.kr.public_file("ops").key], signers=[world.signer])
    Registry(tmp_path / "reg", world.policy()).register(pkg, world.signer, alias="production")
    codes, outputs = {}, {}
    for name, run in (("fast", lambda a: fast.main(a, [])), ("full", main)):
        argv = ["route", "resolve", "support", "--registry", str(tmp_path / "reg"), "--state",
                str(tmp_path / f"{name}.json")]
        codes[name] = [run(argv + ["--json"]), run(argv)]  # changed, then unchanged (exit 20)
        outputs[name] = capsys.readouterr()
    assert codes["fast"] == codes["full"] == [0, 20]
    assert outputs["fast"].out == outputs["full"].out and "(unchanged)" in outputs["full"].out
    assert outputs["fast"].err == outputs["full"].err
    argv = ["route", "resolve", "support", "--registry", str(tmp_path / "reg"), "--json"]
    assert _loaded(argv, kit_home) == (0, [])
