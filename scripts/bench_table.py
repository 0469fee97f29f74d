#!/usr/bin/env python3
"""One table from the JSON documents of scripts/bench_all.sh (see scripts/benchkit.py).

    python scripts/bench_table.py OUT_DIR     writes OUT_DIR/table.md and prints it; exit 1 on a miss
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def fmt(v) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.3g}" if abs(v) < 1000 else f"{v:,.0f}"
    return str(v)


def main(folder: Path) -> int:
    lines = ["| bench | figure | value | ratio to baseline | target | result | load at start |",
             "|---|---|---|---|---|---|---|"]
    missed = False
    machine = None
    for rc_file in sorted(folder.glob("*.rc")):
        name, rc = rc_file.stem, rc_file.read_text().strip()
        try:
            doc = json.loads((folder / f"{name}.json").read_text())
        except (OSError, ValueError):
            lines.append(f"| {name} | did not finish (exit {rc}); see {name}.log | - | - | - | FAILED | - |")
            missed = True
            continue
        machine = machine or doc["machine"]
        load = " ".join(f"{x:.2f}" for x in doc["machine"]["load_at_start"])
        for r in doc["rows"] or [{"what": "(no headline figure)", "value": None, "unit": "", "ratio": None,
                                  "target": "", "ok": None}]:
            result = {True: "pass", False: "MISS", None: "-"}[r["ok"]]
            missed |= r["ok"] is False
            lines.append(f"| {name} | {r['what']} | {fmt(r['value'])} {r['unit']} | "
                         f"{fmt(r['ratio']) + 'x' if r['ratio'] is not None else '-'} | {r['target'] or '-'} | "
                         f"{result} | {load} |")
        if rc not in ("0", "1"):
            lines.append(f"| {name} | exited {rc}; see {name}.log | - | - | - | FAILED | {load} |")
            missed = True
    head = []
    if machine:
        head = [f"Machine: {machine['usable_cores']} usable of {machine['cores']} cores, {machine['cpu']}, "
                f"Python {machine['python']}. Each ratio is against that benchmark's own baseline, "
                "measured in the same run.", ""]
    text = "\n".join(head + lines) + "\n"
    (folder / "table.md").write_text(text)
    print(text)
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1])))
