"""n2he fixtures: three roles with their own keyrings, keys exchanged only as public files
through the real CLI, and the three sites' n2he round-1 updates, built once per test process.

    sites/       site-a, site-b, site-c signing keys; trusts the HE public context, the
                 aggregator's and the key holder's recipient keys
    aggregator/  the aggregator's recipient key and signing key; trusts the sites and the HE
                 public context. It holds no HE secret key (the custody test checks).
    keyholder/   the HE key (its secret), the key holder's recipient key, the release key
                 and the operator's recipient key; trusts the sites and the aggregator
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.helpers import PASS

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
SITES = ("site-a", "site-b", "site-c")
ROUND = "2026-12-01"
TRAINING = {"steps": 40, "batch_size": 16, "learning_rate": 0.003, "seed": 7, "max_seq_len": 96}


def cli(home: Path, *args: str) -> int:
    from tgflow_cli.main import main

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TGFLOW_HOME", str(home))
        return main(list(args))


class Roles:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.sites, self.agg, self.kh = root / "sites", root / "aggregator", root / "keyholder"
        self.updates: dict[str, Path] = {}
        self.plain: dict[str, Path] = {}

    def spec(self, name: str, *, n2he: dict | None = None, mode: str = "n2he", **over) -> Path:
        privacy = {"mode": mode, **({"n2he": {"context": "route-he", "key_holder": "keyholder",
                                              "max_update_norm": 50.0, **(n2he or {})}} if mode == "n2he" else {})}
        spec = {
            "route_key": "support", "base_model_ref": str(EXAMPLES / "tiny-base"),
            "reference": {"type": "jsonl", "uri": str(EXAMPLES / "feeds/reference.jsonl"), "max_examples": 32},
            "eval": {"type": "jsonl", "uri": str(EXAMPLES / "feeds/fed/eval.jsonl")},
            "policy": {"min_novel_examples": 8, "forgetting_budget": 0.5, "gate": {"min_eval_improvement": 0.3}},
            "privacy": privacy,
            "lora": {"r": 8, "alpha": 16, "target_modules": ["q_proj", "v_proj"]},
            "training": TRAINING,
            "federation": {"round": ROUND, "aggregator": "aggregator", "method": "ffa", "sites": list(SITES),
                           "compression": {"quantize": "none"}},
            "output": {"path": f"out/{name}/support.tgsp", "signing_key": "release",
                       "recipients": ["operator"], "registry": f"out/{name}/registry"},
        }
        spec.update(over)
        path = self.root / f"{name}.json"
        path.write_text(json.dumps(spec))
        return path

    def site(self, name: str, site: str, **over) -> Path:
        over.setdefault("feed", {"type": "jsonl", "uri": str(EXAMPLES / f"feeds/fed/{site}.jsonl")})
        over.setdefault("output", {"path": f"out/{name}/update.tgsp", "signing_key": site, "recipients": ["operator"],
                                   "registry": f"out/{name}/registry"})
        assert cli(self.sites, "peft", "run", "--spec", str(self.spec(name, **over))) == 0
        return self.root / "out" / name / "update.tgsp"

    def aggregator_spec(self, name: str, **over) -> Path:
        over.setdefault("output", {"path": f"out/{name}/sum.tgsp", "signing_key": "aggregator-sign",
                                   "recipients": ["keyholder"], "registry": f"out/{name}/registry"})
        return self.spec(name, **over)

    def aggregate(self, name: str, updates: list[Path], *extra: str, **over) -> tuple[int, Path]:
        spec = self.aggregator_spec(name, **over)
        rc = cli(self.agg, "fed", "aggregate", *map(str, updates), "--spec", str(spec), "--quorum", "2", *extra)
        return rc, self.root / "out" / name / "sum.tgsp"

    def decrypt(self, name: str, summed: Path, updates: list[Path], *extra: str, quorum: str = "2", **over) -> int:
        spec = self.spec(name, **over)
        return cli(self.kh, "fed", "decrypt", str(summed), *map(str, updates), "--spec", str(spec),
                   "--aggregator", "aggregator-sign", "--quorum", quorum, *extra)


def _exchange(r: Roles) -> None:
    """Every key made where it is held; only public files cross between roles."""
    pub = r.root / "pub"
    pub.mkdir()
    made = {r.kh: [("route-he", "he"), ("keyholder", "recipient"), ("release", "signing"), ("operator", "recipient")],
            r.agg: [("aggregator", "recipient"), ("aggregator-sign", "signing")],
            r.sites: [(s, "signing") for s in SITES] + [("operator", "recipient")]}
    for home, keys in made.items():
        for name, kind in keys:
            assert cli(home, "key", "generate", name, "--type", kind) == 0
            assert cli(home, "key", "export-public", name, "-o", str(pub / f"{home.name}-{name}.json")) == 0
    share = {r.sites: [(r.kh, "route-he"), (r.kh, "keyholder"), (r.agg, "aggregator")],
             r.agg: [(r.kh, "route-he"), (r.kh, "keyholder"), *((r.sites, s) for s in SITES)],
             r.kh: [(r.agg, "aggregator-sign"), (r.agg, "aggregator"), *((r.sites, s) for s in SITES)]}
    for home, keys in share.items():
        for src, name in keys:
            assert cli(home, "key", "import", str(pub / f"{src.name}-{name}.json")) == 0


@pytest.fixture(scope="session")
def roles(tmp_path_factory):
    root = tmp_path_factory.mktemp("n2he")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TGFLOW_PASSPHRASE", PASS)
        mp.delenv("TGFLOW_PASSPHRASE_FILE", raising=False)
        mp.chdir(root)
        r = Roles(root)
        _exchange(r)
        for site in SITES:
            r.updates[site] = r.site(site, site)
        yield r
