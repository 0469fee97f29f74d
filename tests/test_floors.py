"""The floors of docs/architecture.md: imports point down, and nothing imports in a circle.

The contracts live in pyproject.toml ([tool.importlinter]) and import-linter checks them
over every import in the source, function-level ones too. The rest is checked here: what
is loaded at run time, a thin top, and small modules.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LINT = str(Path(sys.executable).with_name("lint-imports"))
PACKAGES = ("tgsp", "runners", "tgflow_cli")
MAX_TOP_MODULES = 4  # runners/__init__.py, spec.py, outcomes.py, and room for one more
MAX_LINES = 400


def _modules(pkg: str) -> list[str]:
    out = []
    for path in sorted((ROOT / pkg).rglob("*.py")):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        out.append(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return out


def _lint(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([LINT, "--no-cache", *args], cwd=cwd, capture_output=True, text=True)


def test_the_import_contracts_are_kept():
    """Floors, no circles, no recipe or CLI imported from below, no torch under route state."""
    run = _lint(ROOT)
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-2000:]
    assert "5 kept, 0 broken" in run.stdout


def test_the_linter_finds_a_circle_and_an_upward_import(tmp_path):
    """The same contract types over a small tree that breaks them: the check can fail."""
    pkg = tmp_path / "house"
    for name, body in {"__init__.py": "", "low/__init__.py": "", "high/__init__.py": "",
                       "low/a.py": "def f():\n    from . import b\n", "low/b.py": "from . import a\n",
                       "low/c.py": "def g():\n    from ..high import top\n", "high/top.py": "from ..low import c\n"}.items():
        (pkg / name).parent.mkdir(parents=True, exist_ok=True)
        (pkg / name).write_text(body)
    (tmp_path / ".importlinter").write_text(textwrap.dedent("""\
        [importlinter]
        root_package = house
        [importlinter:contract:floors]
        name = floors
        type = layers
        layers =
            house.high
            house.low
        [importlinter:contract:circles]
        name = circles
        type = acyclic_siblings
        ancestors = house
        """))
    run = subprocess.run([LINT, "--no-cache"], cwd=tmp_path, capture_output=True, text=True,
                         env={"PYTHONPATH": str(tmp_path), "PATH": "/usr/bin:/bin"})
    assert run.returncode == 1, run.stdout + run.stderr
    assert "0 kept, 2 broken" in run.stdout
    assert "house.low.c -> house.high.top" in run.stdout


def _loaded_after_importing(modules: list[str], watched: str) -> list[str]:
    """Import ``modules`` in a fresh interpreter; the loaded modules for which ``watched`` is true."""
    code = ("import importlib, json, sys\n"
            f"for m in {modules!r}: importlib.import_module(m)\n"
            f"print(json.dumps(sorted(m for m in sys.modules if {watched})))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT).stdout
    return json.loads(out)


def test_importing_the_library_loads_no_recipe_and_no_cli():
    """At run time too: every library module imported, nothing of the top floors came along."""
    library = [m for pkg in ("tgsp", "runners") for m in _modules(pkg) if not m.startswith("runners.recipes")]
    assert _loaded_after_importing(library, "m.startswith(('runners.recipes', 'tgflow_cli'))") == []


def test_route_state_never_loads_torch():
    """runners/state/ (and runners/oci/, which it reads through) is what a deploying CronJob loads: no torch,
    numpy, transformers, peft or tenseal."""
    light = [m for m in _modules("runners")
             if m.startswith(("runners.state", "runners.data", "runners.oci", "runners.telemetry"))]
    heavy = "m.split('.')[0] in ('torch', 'numpy', 'transformers', 'peft', 'tenseal')"
    assert _loaded_after_importing(light, heavy) == []


def test_a_thin_top():
    top = sorted(p.name for p in (ROOT / "runners").glob("*.py"))
    assert len(top) <= MAX_TOP_MODULES, top


@pytest.mark.parametrize("pkg", PACKAGES)
def test_no_module_is_over_400_lines(pkg):
    sizes = {str(p.relative_to(ROOT)): len(p.read_text().splitlines()) for p in (ROOT / pkg).rglob("*.py")}
    assert {path: n for path, n in sizes.items() if n > MAX_LINES} == {}
