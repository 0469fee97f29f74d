"""Layering rules: the format library stays light."""

import subprocess
import sys


def test_tgsp_imports_no_torch_typer_or_rich():
    code = ("import sys, tgsp, tgsp.keyring, tgsp.unpack; "
            "print(sorted(m for m in ('torch', 'typer', 'rich', 'peft', 'click', 'numpy') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_route_resolve_stays_light():
    """A deploying CronJob's `route resolve` reads the registry without loading torch."""
    code = ("import sys, runners.state.registry, runners.state.store, tgsp.route_index, tgflow_cli.route_cmds; "
            "print(sorted(m for m in ('torch', 'peft', 'transformers', 'numpy') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_no_function_is_over_60_lines():
    """The round and everything else stay in small functions (issue 11: the round as stages)."""
    import ast
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    long = []
    for pkg in ("runners", "tgsp", "tgflow_cli"):
        for path in (root / pkg).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.end_lineno - node.lineno >= 60:
                    long.append(f"{path.relative_to(root)}:{node.lineno} {node.name}")
    assert long == []
