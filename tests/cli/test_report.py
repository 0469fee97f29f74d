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
    # the headline a user came for: base -> adapter on the eval set, with intervals
    assert "exact match" in dom.stdout and "choice accuracy" in dom.stdout and "95% Wilson interval" in dom.stdout
    assert "near-duplicates" in dom.stdout and ">examples</text>" in dom.stdout  # the histogram's count axis
    assert "budget 10%" in dom.stdout  # forgetting in one unit: percent
    shot = tmp_path / "report.png"
    headless(exe, tmp_path, "--window-size=1100,1500", f"--screenshot={shot}", out.as_uri())
    assert shot.is_file() and shot.stat().st_size > 20_000  # a rendered page, not a blank one


def test_the_wilson_interval():
    from runners.learn.intervals import wilson

    lo, hi = wilson(1.0, 48)  # 48 of 48: the upper end is 1, the lower end is 1 - about 3.84/48
    assert abs(hi - 1.0) < 1e-9 and abs(lo - 0.926) < 0.002
    lo, hi = wilson(0.5, 100)
    assert abs(lo - 0.404) < 0.002 and abs(hi - 0.596) < 0.002


def test_the_report_s_plots_scale_down_and_times_do_not_wrap(round_package, tmp_path, monkeypatch):
    """Its stylesheet lets each SVG shrink to a narrow window and keeps a timestamp on one line."""
    root, pkg = round_package
    monkeypatch.setenv("TGFLOW_HOME", str(root / "home"))
    out = tmp_path / "r.html"
    assert main(["tgsp", "report", str(pkg), "-o", str(out)]) == 0
    text = out.read_text()
    assert "svg{max-width:100%;height:auto}" in text and "td.when code{white-space:nowrap}" in text


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


# --- hostile evidence (issue 26): every field, any JSON value ---------------------------------
from html.parser import HTMLParser  # noqa: E402

from hypothesis import HealthCheck, given, settings, strategies as st  # noqa: E402

EVIL = st.sampled_from(['<script>alert(1)</script>', '"><img src=x onerror=alert(2)>', "</svg><b>x</b>",
                        "x" * 100_000, "&amp;&lt;", "\u202e\u0000"])
JSON = st.recursive(st.none() | st.booleans() | st.integers(-2 ** 63, 2 ** 63) | st.floats(allow_nan=False) | EVIL
                    | st.text(max_size=20), lambda inner: st.lists(inner, max_size=4)
                    | st.dictionaries(st.text(max_size=8) | EVIL, inner, max_size=4), max_leaves=12)
FIELDS = {
    "tgflow.training": ["loss_curve", "steps", "loss_first", "loss_last", "withheld_under_dp"],
    "tgflow.evaluation": ["eval_loss_before", "eval_loss_after", "gate", "passed", "reasons", "eval_improvement"],
    "tgflow.forgetting": ["forgetting", "budget", "passed", "reference_examples"],
    "tgflow.novelty": ["histogram", "threshold", "examples", "novel", "skipped"],
    "tgflow.inputs": ["parent"], "tgflow.round.start": ["parent", "route"],
    "tgflow.privacy": ["mode", "epsilon", "note", "randomness"], "tgflow.build": ["tool", "files"],
}
CURVES = st.fixed_dictionaries({"stride": JSON | st.integers(), "losses": st.lists(st.floats(allow_nan=False) | JSON,
                                                                                    max_size=50) | JSON})


class _Page(HTMLParser):
    """The elements a report may contain, and nothing executable."""

    ALLOWED = {"html", "head", "meta", "title", "style", "body", "h1", "h2", "p", "span", "table", "tr", "th", "td",
               "code", "ul", "li", "div", "figure", "figcaption", "svg", "rect", "line", "polyline", "text"}

    def __init__(self) -> None:
        super().__init__()
        self.bad: list[str] = []

    def handle_starttag(self, tag, attrs):
        if tag not in self.ALLOWED or any(name.startswith("on") or name in ("href", "src") for name, _ in attrs):
            self.bad.append(f"{tag} {attrs}")


@pytest.fixture(scope="module")
def built_info(tmp_path_factory):
    from tgflow_cli.tgsp_cmds import _package_info

    root = tmp_path_factory.mktemp("hostile")
    kr = Keyring(root / "home")
    kr.generate("rel", "signing", pp)
    pkg = root / "p.tgsp"
    tgsp.build(make_adapter(root / "src"), pkg, signers=[kr.signer("rel", pp)], route="r")
    return _package_info(pkg)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(values=st.fixed_dictionaries({k: st.dictionaries(st.sampled_from(v), JSON, max_size=len(v))
                                     for k, v in FIELDS.items()}), curve=CURVES, why=EVIL)
def test_hostile_values_in_every_evidence_field_stay_text(built_info, values, curve, why):
    from tgflow_cli.report import render

    values["tgflow.training"]["loss_curve"] = curve
    ev = [*built_info["evidence"], *({"seq": 9, "time": "t", "type": k, "data": d} for k, d in values.items())]
    page = render({**built_info, "evidence": ev}, (False, why))
    parser = _Page()
    parser.feed(page)
    assert parser.bad == []
    assert "<script" not in page
    assert len(page) < 1 << 20  # 100 kB values are clipped: the page stays small


def test_a_package_without_a_round_says_what_does_not_apply(built_info):
    from tgflow_cli.report import render

    page = render(built_info, (True, "ok"))
    assert "records no training round" in page
    assert "FAILED" not in page and "<svg" not in page


def test_a_long_evidence_log_is_cut_with_a_count(built_info):
    from tgflow_cli.report import MAX_EVENTS, render

    ev = [{"seq": n, "time": "t", "type": "x.note", "data": {"n": n}} for n in range(MAX_EVENTS + 5)]
    page = render({**built_info, "evidence": ev}, (True, "ok"))
    assert "and 5 more events" in page and page.count("<tr><td><code>") == MAX_EVENTS


def test_route_report_epsilon_chart_and_hostile_values():
    """The route page's ε line against the budget, and data that is never markup."""
    from tgflow_cli import route_report

    evil = '<script>alert(1)</script>"\x1b[31m'
    doc = {"route": evil, "version": 3, "issued": evil, "expires": "2027-01-01T00:00:00Z",
           "aliases": {"production": {"package_id": "sha256:" + "a" * 64, "version": 2}},
           "history": [{"index_version": 1, "at": evil, "action": evil, "alias": None, "version": 1, "by": evil}]}
    rows = [{"version": v, "package_id": "sha256:" + c * 64, "registered": evil, "verified": v != 3, "why": evil,
             "round": {"exact_match": 0.5 + v / 10, "choice_accuracy": "x"},
             "privacy": {"epsilon": 3.0, "route_epsilon": 3.0 * v, "route_budget_epsilon": 10.0}}
            for v, c in ((1, "b"), (2, "a"), (3, "c"))]
    page = route_report.render(doc, rows)
    assert "<script>" not in page and "&lt;script&gt;" in page and "\x1b" not in page.replace("\\x1b", "")
    assert 'id="epsilon-over-time"' in page and "budget 10" in page and page.count("<circle") == 3  # choice: not a number
    assert page.count("<span class=ok>verified</span>") == 2 and "production" in page
