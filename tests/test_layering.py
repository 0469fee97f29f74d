"""Layering rules: the format library stays light."""

import subprocess
import sys


def test_tgsp_imports_no_torch_typer_or_rich():
    code = ("import sys, tgsp, tgsp.keyring, tgsp.unpack; "
            "print(sorted(m for m in ('torch', 'typer', 'rich', 'peft', 'click', 'numpy') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
