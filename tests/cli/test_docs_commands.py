"""Every `tgflow` command the docs show parses against the real command tree (issue 30: docs drifted
from the tool). Each command in a fenced block of README.md and docs/*.md, continuation lines
joined, is split as a shell would and handed to click: the subcommands must exist, every flag must
be one the command has, every choice and number must convert, and required options must be there.
Synopsis lines ("[--json]", "{k8s,sagemaker}", "KEY...") are notation, not commands: they are
skipped. The walkthroughs that run literally are in test_readme.py, fed/test_docs.py,
n2he/test_docs.py and test_routes_doc below."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from tgflow_cli.main import command, hoist

ROOT = Path(__file__).resolve().parents[2]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
NOTATION = re.compile(r"\[--|\{[a-z0-9]+,|\.\.\.|[A-Z]{3,}\b(?!=)|\|")


def commands(doc: Path) -> list[tuple[int, str]]:
    """(line, command) for each `tgflow ...` in the doc's fenced blocks, comments and prompts removed."""
    out, fence, joined, start = [], False, "", 0
    for n, raw in enumerate(doc.read_text().splitlines(), 1):
        if raw.lstrip().startswith("```"):
            fence = not fence
            continue
        if not fence:
            continue
        line = raw.strip()
        if not joined:
            start = n
        joined += " " + line.rstrip("\\").strip()
        if line.endswith("\\"):
            continue
        text, joined = joined.strip(), ""
        text = re.sub(r"^\$ ", "", text)
        text = re.split(r"\s+#\s|\s*[|;]\s|\s*&&\s|\s*>\s", text)[0]  # the tgflow part of a shell line
        m = re.match(r"(?:[A-Z_][A-Z0-9_]*=\S+\s+)*tgflow\s+(.*)$", text)  # a command line, not output or prose
        if m and "$" not in m.group(1) and not NOTATION.search(m.group(1)):
            out.append((start, m.group(1)))
    return out


CASES = [(doc, n, cmd) for doc in DOCS for n, cmd in commands(doc)]


def test_the_docs_show_many_commands():
    assert len(CASES) >= 45, len(CASES)  # a floor: the extractor must keep finding them


GLOBAL_WITH_VALUE = {"--home"}


@pytest.mark.parametrize("doc,line,cmd", CASES, ids=[f"{d.name}:{n}" for d, n, _ in CASES])
def test_each_documented_command_parses(doc, line, cmd):
    args = hoist(shlex.split(cmd))
    while args and args[0].startswith("-"):  # global flags, hoisted to the front
        args = args[2:] if args[0] in GLOBAL_WITH_VALUE else args[1:]
    node, path = command(), ["tgflow"]
    while hasattr(node, "get_command"):  # a group: the next word names its subcommand
        assert args, f"{doc.name}:{line}: {cmd!r} stops at the group {' '.join(path)}"
        sub = node.get_command(None, args[0])
        assert sub is not None, f"{doc.name}:{line}: no command {' '.join(path)} {args[0]} (in {cmd!r})"
        node, path, args = sub, path + [args[0]], args[1:]
    node.make_context(" ".join(path), list(args))  # parses and converts every flag and argument, as a run does


def test_routes_doc_walkthrough_runs_as_written(tmp_path):
    """docs/routes.md's route life, literally (after making the two keys it assumes): two rounds,
    eval, promote, roll back, resolve, history, generate."""
    import os
    import shutil
    import subprocess
    import sys

    block = re.findall(r"```bash\n(.*?)```", (ROOT / "docs" / "routes.md").read_text(), flags=re.S)[0]
    work = tmp_path / "work"
    shutil.copytree(ROOT / "examples", work / "examples", ignore=shutil.ignore_patterns("demo-out"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("TGFLOW_")}
    env.update(HOME=str(tmp_path / "home"), PATH=f"{Path(sys.executable).parent}:{env.get('PATH', '')}",
               TGFLOW_PASSPHRASE="routes-doc-passphrase")
    keys = "tgflow key generate release\ntgflow key generate operator --type recipient\n"
    proc = subprocess.run(["bash", "-c", "set -euo pipefail\n" + keys + block], cwd=work, env=env,
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "production -> version 1" in proc.stdout and '"version": 1' in proc.stdout  # rolled back, resolved
    assert "adapter v2:" in proc.stdout and "base model:" in proc.stdout  # demo-out/support.tgsp: round 2
