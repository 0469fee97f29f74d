#!/usr/bin/env python3
"""Write docs/run-spec.schema.json from runners/spec.py (the one source of truth)."""

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from runners.spec import json_schema  # noqa: E402

(ROOT / "docs" / "run-spec.schema.json").write_text(json.dumps(json_schema(), indent=2, sort_keys=True) + "\n")
print("wrote docs/run-spec.schema.json")
