"""Federated fixtures: one keyring (release, operator, the aggregator, three sites), the shipped
tiny base model, and the three sites' round-1 updates, built once per test process by real
`peft run`s through the CLI."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from tests.helpers import PASS

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
SITES = ("site-a", "site-b", "site-c")
ROUND = "2026-12-01"


class Fed:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.updates: dict[str, Path] = {}

    def spec(self, name: str, *, federation: dict | None = None, **over) -> Path:
        spec = {
            "route_key": "support", "base_model_ref": str(EXAMPLES / "tiny-base"),
            "reference": {"type": "jsonl", "uri": str(EXAMPLES / "feeds/reference.jsonl"), "max_examples": 32},
            "eval": {"type": "jsonl", "uri": str(EXAMPLES / "feeds/fed/eval.jsonl")},
            "policy": {"min_novel_examples": 8, "forgetting_budget": 0.5, "gate": {"min_eval_improvement": 0.3}},
            "lora": {"r": 8, "alpha": 16, "target_modules": ["q_proj", "v_proj"]},
            "training": {"steps": 40, "batch_size": 16, "learning_rate": 0.003, "seed": 7, "max_seq_len": 96},
            "federation": {"round": ROUND, "aggregator": "aggregator", "sites": list(SITES), **(federation or {})},
            "output": {"path": f"out/{name}/support.tgsp", "signing_key": "release",
                       "recipients": ["operator", "aggregator"], "registry": f"out/{name}/registry"},
        }
        spec.update(over)
        path = self.root / f"{name}.json"
        path.write_text(json.dumps(spec))
        return path

    def site(self, name: str, site: str = "site-a", feed: str | None = None, steps: int | None = None, **over) -> Path:
        """Run one site's round through the CLI; return its update package. ``steps``: fewer training
        steps, for updates whose quality does not matter (they are there to be refused)."""
        from tgflow_cli.main import main

        if steps is not None:
            over.setdefault("training", {"steps": steps, "batch_size": 16, "learning_rate": 0.003, "seed": 7,
                                         "max_seq_len": 96})
        over.setdefault("feed", {"type": "jsonl", "uri": str(EXAMPLES / f"feeds/fed/{feed or site}.jsonl")})
        over.setdefault("output", {"path": f"out/{name}/update.tgsp", "signing_key": site,
                                   "recipients": ["operator"], "registry": f"out/{name}/registry"})
        assert main(["peft", "run", "--spec", str(self.spec(name, **over))]) == 0
        return self.root / "out" / name / "update.tgsp"


def _keys() -> None:
    from tgflow_cli.main import main

    for name, kind in (("release", "signing"), ("operator", "recipient"), ("aggregator", "recipient"),
                       *((s, "signing") for s in SITES), ("stranger", "signing")):
        assert main(["key", "generate", name, "--type", kind]) == 0


@pytest.fixture(scope="session")
def fed(tmp_path_factory):
    root = tmp_path_factory.mktemp("fed")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TGFLOW_HOME", str(root / "home"))
        mp.setenv("TGFLOW_PASSPHRASE", PASS)
        mp.delenv("TGFLOW_PASSPHRASE_FILE", raising=False)
        _keys()
        f = Fed(root)
        for site in SITES:
            f.updates[site] = f.site(site, site)
        yield f


@pytest.fixture
def copy_of():
    """A copy of a file under a new name (so a test can damage it)."""
    def copy(src: Path, dst: Path) -> Path:
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, dst)
        return dst
    return copy
