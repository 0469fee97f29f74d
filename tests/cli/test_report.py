"""tgflow tgsp report: one self-contained HTML page, rendered in a real headless
Chromium (Debian's package; .ci/run installs it), with its plots present."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import tgsp
from tgflow_cli.main import main
from tgsp.keyring import Keyring

from tests.helpers import PASS, make_adapter, pp, tgflow_exe

ROOT = Path(__file__).resolve().parents[2]
FIGURES = ("loss-curve", "evaluation", "forgetting", "novelty-histogram")


def chromium() -> str:
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if exe is None:
        if os.environ.get("CI"):
            pytest.fail("Chromium is not installed; .ci/run must apt-get install chromium")
        pytest.skip("Chromium is not installed (apt-get install chromium)")
    return exe


def headless(exe: str, tmp: Path, *args: str) -> subprocess.CompletedProcess:
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-sync",
             "--disable-component-update", "--no-first-run", f"--user-data-dir={tmp / 'profile'}"]
    return subprocess.run([exe, *flags, *args], capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="module")
def round_package(tmp_path_factory):
    """A real round's package (the example spec on the bundled tiny base model)."""
    root = tmp_path_factory.mktemp("report")
    env = {**os.environ, "TGFLOW_HOME": str(root / "home"), "TGFLOW_PASSPHRASE": PASS}
    for argv in (["key", "generate", "release"], ["key", "generate", "operator", "--type", "recipient"],
                 ["peft", "run", "--spec", str(ROOT / "examples" / "run_spec.json"), "--output-root", str(root / "out")]):
        subprocess.run(tgflow_exe() + argv, env=env, check=True, capture_output=True, timeout=600)
    return root, root / "out" / "support.tgsp"


def test_report_renders_in_chromium_with_its_plots(round_package, tmp_path, monkeypatch, capsys):
    root, pkg = round_package
    monkeypatch.setenv("TGFLOW_HOME", str(root / "home"))
    out = tmp_path / "report.html"
    assert main(["tgsp", "report", str(pkg), "-o", str(out)]) == 0
    text = out.read_text()
    assert "<script" not in text and "Content-Security-Policy" in text and "http" not in text.split("<body>")[0].replace(
        "http-equiv", "")  # no external resource of any kind
    for fig in FIGURES:
        assert f'id="{fig}"' in text, fig
    assert main(["tgsp", "report", str(pkg), "-o", str(out)]) == 2  # exists: needs --force
    exe = chromium()
    dom = headless(exe, tmp_path, "--dump-dom", out.as_uri())
    assert dom.returncode == 0, dom.stderr[-2000:]
    for fig in FIGURES:
        assert f'id="{fig}"' in dom.stdout  # the browser parsed the SVG plots into the DOM
    assert "VERIFIED" in dom.stdout and "polyline" in dom.stdout
    shot = tmp_path / "report.png"
    headless(exe, tmp_path, "--window-size=1100,1500", f"--screenshot={shot}", out.as_uri())
    assert shot.is_file() and shot.stat().st_size > 20_000  # a rendered page, not a blank one


def test_hostile_strings_are_text_in_the_report(tmp_path):
    kr = Keyring(tmp_path / "home")
    kr.generate("rel", "signing", pp)
    s = kr.signer("rel", pp)
    evil = '<img src=x onerror=alert(1)><script>alert(2)</script>'
    pkg = tmp_path / "p.tgsp"
    tgsp.build(make_adapter(tmp_path / "src"), pkg, signers=[tgsp.Signer(evil, s.version, s.key, s.lineage)],
               route="r", events=[tgsp.evidence.event("x.note", {evil: evil}, tgsp.clock.utcnow())])
    from tgflow_cli.report import render
    from tgflow_cli.tgsp_cmds import _package_info

    text = render(_package_info(pkg), (False, evil))
    assert "<img" not in text and "<script" not in text and "&lt;img src=x" in text
