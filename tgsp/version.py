"""The tool's version, as one constant: pyproject.toml reads it, and printing it loads nothing."""

VERSION = "0.1.0"
TOOL = f"tgflow {VERSION}"
