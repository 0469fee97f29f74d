"""Missing optional parts: exit 2 with the extra to install, never "internal error" (issue 30).

Each case runs the real CLI in a fresh interpreter where the optional module cannot be
imported (``sys.modules[name] = None`` makes Python's import system raise the same
ModuleNotFoundError an uninstalled package raises).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import PASS

ROOT = Path(__file__).resolve().parents[2]

_RUN = ("import sys\nfor m in sys.argv[1].split(','):\n    sys.modules[m] = None\n"
        "from tgflow_cli.main import main\nsys.exit(main(sys.argv[2:]))")


def _tgflow(home, hidden: str, *args):
    env = {**os.environ, "TGFLOW_HOME": str(home), "TGFLOW_PASSPHRASE": PASS,
           "TGFLOW_PKCS11_MODULE": "/usr/lib/softhsm/libsofthsm2.so", "TGFLOW_PKCS11_PIN": "1234"}
    return subprocess.run([sys.executable, "-c", _RUN, hidden, *args], capture_output=True, text=True, env=env,
                          timeout=120)


def _spec(tmp_path) -> str:
    ex = ROOT / "examples"
    spec = json.loads((ex / "run_spec.json").read_text())
    spec["base_model_ref"] = str(ex / "tiny-base")
    for part in ("feed", "eval", "reference"):
        spec[part]["uri"] = str(ex / spec[part]["uri"])
    spec["output"]["path"] = str(tmp_path / "out" / "support.tgsp")
    (tmp_path / "spec.json").write_text(json.dumps(spec))
    return str(tmp_path / "spec.json")


@pytest.mark.parametrize("hidden,args,extra", [
    ("tenseal", ["key", "generate", "he1", "--type", "he"], "n2he"),
    ("pkcs11", ["key", "generate", "rel", "--pkcs11", "pkcs11:token=ci;object=rel"], "pkcs11"),
    ("torch", ["peft", "run", "--spec", "SPEC"], "train"),
])
def test_a_missing_extra_exits_2_naming_it(tmp_path, hidden, args, extra):
    home = tmp_path / "home"
    if hidden == "torch":  # a round that would run, but for the missing extra
        for name, kind in (("release", "signing"), ("operator", "recipient")):
            assert _tgflow(home, "", "key", "generate", name, "--type", kind).returncode == 0
        args = [_spec(tmp_path) if a == "SPEC" else a for a in args]
    r = _tgflow(home, hidden, *args)
    assert r.returncode == 2, r.stderr
    assert "internal error" not in r.stderr
    assert f"pip install 'tgflow[{extra}]'" in r.stderr, r.stderr
    assert f"optional module '{hidden}" in r.stderr.splitlines()[0]  # names the missing module


def test_doctor_reports_a_missing_extra_and_its_fix_and_agrees_with_version(tmp_path):
    home = tmp_path / "home"
    r = _tgflow(home, "tenseal", "doctor", "--json")
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    by_extra = {f["extra"]: f for f in doc["features"]}
    assert by_extra["n2he"]["installed"] is False and by_extra["n2he"]["fix"] == "pip install 'tgflow[n2he]'"
    assert by_extra["train"]["working"] is True  # the self-test ran: a tensor sum on this machine
    assert all(f["working"] for f in doc["features"] if f["extra"] != "n2he"), doc["features"]
    assert doc["keyring"] == {"path": str(home), "exists": False, "keys": 0}
    assert doc["gpu"]["available"] in (True, False) and doc["config"]["path"] is None
    assert _tgflow(home, "", "key", "generate", "alice").returncode == 0
    version = json.loads(_tgflow(home, "", "version", "--json").stdout)["doctor"]
    assert version["keyring"] == {"path": str(home), "exists": True, "keys": 1}
    assert [f["extra"] for f in version["features"]] == [f["extra"] for f in doc["features"]]
    assert all(f["installed"] for f in version["features"]), version["features"]  # the test extra installs them all
    assert all(f["working"] is None for f in version["features"])  # version stays fast: no self-test


def test_doctor_exits_2_on_a_broken_config(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    (home / "config.toml").write_text("[route]\nregistry = 3\n")
    r = _tgflow(home, "", "doctor")
    assert r.returncode == 2 and "config.toml" in r.stderr


def test_every_doc_says_at_its_top_which_extras_it_needs():
    import re
    import tomllib

    extras = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"])
    for doc in sorted((ROOT / "docs").glob("*.md")):
        lines = doc.read_text().splitlines()
        assert lines[2].startswith("Needs: "), f"{doc.name}: line 3 must say which extras it needs"
        named = {x for group in re.findall(r"`\[([a-z0-9,-]+)\]`", lines[2]) for x in group.split(",")}
        assert named <= extras, f"{doc.name} names unknown extras {named - extras}"
