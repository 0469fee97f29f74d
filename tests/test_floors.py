"""The floors of docs/architecture.md: imports point down, and nothing imports in a circle.

Every import in tgsp/, runners/ and tgflow_cli/ is read from the source (function-level
imports too, which a plain ``import`` at start-up would not show), relative imports
resolved, and ``from P import M`` counted as an import of the module P.M where M is one.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("tgsp", "runners", "tgflow_cli")

# From the top floor down. A package may import its own modules and any package on a
# lower floor; packages on one floor import nothing from each other. Keep this table and
# the one in docs/architecture.md the same.
FLOORS = [
    ["tgflow_cli"],
    ["runners.recipes"],
    ["runners.stages", "runners.export"],
    ["runners.privacy", "runners.distributed"],
    ["runners.learn"],
    ["runners.state", "runners.n2he"],
    ["runners.data", "runners.fed"],
    ["runners.spec", "runners.outcomes"],
    ["tgsp"],
]
FLOOR_OF = {unit: n for n, units in enumerate(FLOORS) for unit in units}
MAX_TOP_MODULES = 4  # runners/__init__.py, spec.py, outcomes.py, and room for one more
MAX_LINES = 400


def _modules() -> dict[str, Path]:
    out = {}
    for pkg in PACKAGES:
        for path in sorted((ROOT / pkg).rglob("*.py")):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            out[".".join(parts)] = path
    return out


MODULES = _modules()


def _imports(name: str, path: Path) -> set[str]:
    """The project modules that ``name`` imports, anywhere in its source."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                head = package.split(".")[:len(package.split(".")) - (node.level - 1)]
                base = ".".join(head + ([node.module] if node.module else []))
            for a in node.names:
                found.add(f"{base}.{a.name}" if f"{base}.{a.name}" in MODULES else base)
    return {m for m in found if m in MODULES and m != name}


GRAPH = {name: _imports(name, path) for name, path in MODULES.items()}


def unit_of(module: str) -> str:
    """A module's floor unit: its runners sub-package (or top module), or its top package."""
    parts = module.split(".")
    return ".".join(parts[:2]) if parts[0] == "runners" and len(parts) > 1 else parts[0]


def _circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one node (Tarjan), and self-loops."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1 or v in graph.get(v, ()):
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_no_import_circle_between_modules():
    assert _circles(GRAPH) == []


def test_no_import_circle_between_packages():
    units: dict[str, set[str]] = {}
    for src, targets in GRAPH.items():
        units.setdefault(unit_of(src), set()).update(unit_of(t) for t in targets if unit_of(t) != unit_of(src))
    assert _circles(units) == []


def test_every_module_sits_on_a_floor():
    assert sorted({unit_of(m) for m in MODULES} - set(FLOOR_OF) - {"runners"}) == []


def test_the_floors_keep_their_order():
    """Every import lands on a lower floor, or inside its own package."""
    up = [f"{src} -> {dst}" for src, targets in GRAPH.items() for dst in targets
          if src != "runners" and unit_of(dst) != unit_of(src) and FLOOR_OF[unit_of(dst)] <= FLOOR_OF[unit_of(src)]]
    assert up == []


def test_the_library_never_imports_a_recipe_or_the_cli():
    """Read from the source: runners.recipes and tgflow_cli are imported only from above."""
    library = [m for m in MODULES if not m.startswith(("runners.recipes", "tgflow_cli"))]
    wrong = [f"{m} -> {t}" for m in library for t in GRAPH[m] if t.startswith(("runners.recipes", "tgflow_cli"))]
    assert wrong == []


def test_importing_the_library_loads_no_recipe_and_no_cli():
    """And at run time: every library module imported, nothing of the top floors came along."""
    library = sorted(m for m in MODULES if not m.startswith(("runners.recipes", "tgflow_cli")))
    code = ("import importlib, sys\n"
            f"for m in {library!r}: importlib.import_module(m)\n"
            "print(sorted(m for m in sys.modules if m.startswith(('runners.recipes', 'tgflow_cli'))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT).stdout
    assert out.strip() == "[]"


def test_route_state_never_loads_torch():
    """runners/state/ is what a deploying CronJob reads: no torch, numpy, transformers or peft."""
    state = sorted(m for m in MODULES if m.startswith("runners.state") or m.startswith("runners.data"))
    code = ("import importlib, sys\n"
            f"for m in {state!r}: importlib.import_module(m)\n"
            "print(sorted(m for m in ('torch', 'numpy', 'transformers', 'peft', 'tenseal') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT).stdout
    assert out.strip() == "[]"


def test_a_thin_top():
    top = sorted(p.name for p in (ROOT / "runners").glob("*.py"))
    assert len(top) <= MAX_TOP_MODULES, top


@pytest.mark.parametrize("pkg", PACKAGES)
def test_no_module_is_over_400_lines(pkg):
    long = {str(p.relative_to(ROOT)): n for m, p in MODULES.items() if m.split(".")[0] == pkg
            and (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert long == {}


def test_the_checks_can_fail():
    """The graph readers find what they are meant to find."""
    assert _circles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert "runners.learn.train" in GRAPH["runners.stages.update"]
    assert "runners.state.store" in GRAPH["runners.recipes.round"]
    assert unit_of("runners.privacy.modes") == "runners.privacy" and unit_of("tgsp.keyring") == "tgsp"
