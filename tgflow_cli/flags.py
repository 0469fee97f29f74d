"""Typer options that several command modules share (kept out of common.py, which the
typer-free fast path of `tgsp verify` loads)."""

from __future__ import annotations

import typer

OutputFormat = typer.Option(None, "-o", "--output-format", metavar="json|yaml|wide",
                            help="json or yaml (as --json), or wide: the table with whole ids.")
