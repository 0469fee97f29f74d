"""The run spec: validation names the field; the published schema is current."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from runners.spec import json_schema, load_spec, parse_spec
from tgsp.errors import InputError, NotFoundError

ROOT = Path(__file__).resolve().parents[2]
GOOD = {
    "route_key": "r", "base_model_ref": "m", "feed": {"type": "jsonl", "uri": "a.jsonl"},
    "reference": {"type": "jsonl", "uri": "b.jsonl"}, "training": {"steps": 3},
    "output": {"path": "o.tgsp", "signing_key": "k", "recipients": ["x"]},
}


def with_(path: str, value):
    spec = json.loads(json.dumps(GOOD))
    *parents, last = path.split(".")
    node = spec
    for p in parents:
        node = node.setdefault(p, {})
    node[last] = value
    return spec


def test_minimal_spec_and_defaults():
    spec = parse_spec(GOOD)
    assert spec.lora.r == 8 and spec.privacy.mode == "off" and spec.output.version == "auto"


@pytest.mark.parametrize("path,value,needle", [
    ("training.batch_size", 0, "training.batch_size"),
    ("training.epochs", 2, "exactly one of steps or epochs"),
    ("feed.type", "csv", "feed.type"),
    ("feed.bogus", 1, "feed.bogus: unknown field"),
    ("route_key", "../etc", "route_key"),
    ("policy.novelty_threshold", 1.5, "policy.novelty_threshold"),
    ("lora.target_modules", [], "lora.target_modules"),
    ("output.recipients", [], "output.recipients"),
    ("privacy.mode", "dp", "needs a dp section"),
    ("training.precision", "int4", "training.precision"),
    ("privacy.dp", {"max_grad_norm": 1, "target_delta": 1e-5}, "exactly one of noise_multiplier or target_epsilon"),
    ("privacy.dp", {"max_grad_norm": 1, "target_delta": 1e-5, "noise_multiplier": 1, "target_epsilon": 2},
     "exactly one of noise_multiplier or target_epsilon"),
    ("privacy.dp", {"max_grad_norm": 1, "target_delta": 1e-5, "target_epsilon": 5, "route_budget_epsilon": 4},
     "exceeds route_budget_epsilon"),
    ("privacy.dp", {"max_grad_norm": 0, "target_delta": 1e-5, "noise_multiplier": 1}, "privacy.dp.max_grad_norm"),
    ("privacy.dp", {"max_grad_norm": 1, "target_delta": 1.5, "noise_multiplier": 1}, "privacy.dp.target_delta"),
    ("privacy.dp", {"max_grad_norm": 1, "target_delta": 1e-5, "noise_multiplier": 1, "accountant": "gdp"},
     "privacy.dp.accountant"),
])
def test_invalid_specs_name_the_field(path, value, needle):
    with pytest.raises(InputError) as exc:
        parse_spec(with_(path, value))
    assert needle in str(exc.value) and str(exc.value).startswith("run spec field")


def test_comments_are_allowed_anywhere():
    spec = with_("$comment", "top")
    spec["feed"]["$comment"] = "nested"
    assert parse_spec(spec).feed.uri == "a.jsonl"


def test_example_spec_is_valid():
    spec, base, digest = load_spec(ROOT / "examples" / "run_spec.json")
    assert spec.route_key == "support" and len(digest) == 64
    dp, _, _ = load_spec(ROOT / "examples" / "run_spec_dp.json")
    assert dp.privacy.mode == "dp" and dp.privacy.dp.target_epsilon == 3.0 and dp.route_key == "support-dp"


def test_missing_and_malformed_spec_files(tmp_path):
    with pytest.raises(NotFoundError):
        load_spec(tmp_path / "nope.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(InputError, match="not valid JSON"):
        load_spec(bad)


def test_published_json_schema_is_current():
    published = json.loads((ROOT / "docs" / "run-spec.schema.json").read_text())
    assert published == json_schema(), "regenerate: python scripts/gen_schema.py"
