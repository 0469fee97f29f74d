"""docs/observability.md's alert rules and Grafana dashboard parse, and query only metrics tgflow writes;
the metric table in the doc is the one the code writes."""

from __future__ import annotations

import json
import re
from pathlib import Path

import yaml

from runners.telemetry.prom import TABLE

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
WRITTEN = {name for name, _, _ in TABLE}


def named(expr: str) -> set[str]:
    return set(re.findall(r"\btgflow_[a-z_]+\b", expr))


def test_the_alert_rules_parse_and_name_real_metrics():
    doc = yaml.safe_load((DOCS / "observability" / "alerts.yml").read_text())
    rules = [r for g in doc["groups"] for r in g["rules"]]
    assert {r["alert"] for r in rules} == {"TgflowNoSuccessfulRound", "TgflowEpsilonBudgetAlmostSpent",
                                              "TgflowMetricsAbsent", "TgflowRouteNeverSucceeded"}
    for r in rules:
        assert named(r["expr"]) and named(r["expr"]) <= WRITTEN, r["expr"]
    [stale] = [r for r in rules if r["alert"] == "TgflowNoSuccessfulRound"]
    assert "tgflow_round_last_success_timestamp_seconds" in stale["expr"]


def test_the_dashboard_parses_and_names_real_metrics():
    dash = json.loads((DOCS / "observability" / "grafana-dashboard.json").read_text())
    exprs = [t["expr"] for p in dash["panels"] for t in p["targets"]]
    exprs += [v["query"] for v in dash["templating"]["list"] if v["type"] == "query"]
    assert len(dash["panels"]) >= 6 and len({p["id"] for p in dash["panels"]}) == len(dash["panels"])
    for e in exprs:
        assert named(e) and named(e) <= WRITTEN, e


def test_the_doc_lists_every_metric():
    text = (DOCS / "observability.md").read_text()
    listed = set(re.findall(r"^\| `(tgflow_[a-z_]+)`", text, re.M))
    assert listed == WRITTEN
