#!/usr/bin/env python3
"""Every privacy mode, side by side, in one run on the shipped data: does it learn the task?

Each row runs the real CLI on the shipped examples as they are, then scores
the released adapter on a large generated eval set (384 tickets by default,
from scripts/make_tiny_base.py's generators with their own seeds), so that a
5-point difference is real: each metric carries its 95% Wilson interval. The
large set is scored apart from the round: as the round's own eval feed it
would drive the leak filter and change what the round trains on.

  central         examples/run_spec_dp.json without privacy: the same data and recipe, the
                  baseline a user of the DP round would pick
  dp-eps1/3/8     examples/run_spec_dp.json at target_epsilon 1, 3 and 8 (production randomness)
  central-pooled  `fed simulate`'s baseline: the sites' pooled data, their steps added up
  fed-exact       `fed simulate` on examples/fed_*.json
  fed-ffa         `fed simulate` on the n2he examples' recipe in plaintext (ffa)
  n2he            the n2he examples end to end: sites, encrypted sum, key holder's decryption

    python scripts/bench_quality.py [--json] [--eval N] [--only ROW[,ROW...]]

Columns: mode, epsilon (null where not private), exact_match, choice_accuracy,
forgetting (the reference set's loss rise against the base model), seconds
(wall time of the row's commands). About 12-15 minutes on 2 CPU cores.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
sys.path.insert(0, str(ROOT / "scripts"))
sys.path.insert(0, str(ROOT))
import benchkit  # noqa: E402

import make_tiny_base as gen  # noqa: E402

TG = [sys.executable, "-m", "tgflow_cli"]
PASS = "bench-quality-passphrase"
ROWS = ("central", "dp-eps1", "dp-eps3", "dp-eps8", "fed-exact", "fed-ffa", "n2he")


def eval_sets(work: Path, n: int) -> tuple[Path, Path]:
    """Large eval sets the training feeds never saw: the support task, and the sites' union."""
    support, fed = work / "support-eval-large.jsonl", work / "fed-eval-large.jsonl"
    gen.write_jsonl(support, [gen.ticket(random.Random(f"bench-eval-{i}")) for i in range(n)])
    every = tuple(range(len(gen.NEW["symptom"])))
    gen.write_jsonl(fed, [gen.site_ticket(random.Random(f"bench-fed-eval-{i}"), every) for i in range(n)])
    return support, fed


def spec_copy(work: Path, name: str, src: str, edit) -> Path:
    """A copy of an example spec with absolute inputs, edited by ``edit(spec)``."""
    spec = json.loads((EXAMPLES / src).read_text())
    spec["base_model_ref"] = str(EXAMPLES / spec["base_model_ref"])
    for key in ("feed", "eval", "reference"):
        if isinstance(spec.get(key), dict):
            spec[key]["uri"] = str((EXAMPLES / spec[key]["uri"]).resolve())
    edit(spec)
    path = work / f"{name}.json"
    path.write_text(json.dumps(spec))
    return path


def tg(env: dict, *args, ok=(0,)) -> tuple[dict | None, float]:
    """Run the CLI; (its --json report or None, seconds)."""
    t0 = time.perf_counter()
    p = subprocess.run([*TG, *map(str, args)], cwd=ROOT, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    if p.returncode not in ok:
        sys.exit(f"bench_quality: tgflow {' '.join(map(str, args[:3]))} exited {p.returncode}: {p.stderr[-1500:]}")
    try:  # one JSON document (pretty or not), or a report as the last line after other output
        return json.loads(p.stdout), seconds
    except ValueError:
        lines = [x for x in p.stdout.splitlines() if x.startswith("{")]
        return (json.loads(lines[-1]) if lines else None), seconds


def row(mode: str, epsilon, m: dict, forgetting, seconds: float, outcome: str | None) -> dict:
    return {"mode": mode, "epsilon": epsilon, "exact_match": m.get("exact_match"),
            "exact_match_ci95": m.get("exact_match_ci95"), "choice_accuracy": m.get("choice_accuracy"),
            "choice_accuracy_ci95": m.get("choice_accuracy_ci95"), "forgetting": forgetting,
            "seconds": round(seconds, 1), "outcome": outcome, "eval_examples": m.get("examples")}


def scored(home: Path, package: Path, big_eval: Path) -> dict | None:
    """A released package's metrics on the large eval set (None if the round released nothing).
    Scored apart from the round: as the round's eval feed, the large set would drive its leak
    filter and change what it trains on."""
    if not package.exists():
        return None
    from runners.data.feeds import load_feed
    from runners.recipes.trial import score
    from runners.spec import FeedSpec
    from tgsp import Keyring

    kr = Keyring(home)
    examples = load_feed(FeedSpec(type="jsonl", uri=str(big_eval)), ROOT).examples
    return score(package, kr.trust_policy(), kr.identities("operator", lambda: PASS), examples)


def from_round(mode: str, epsilon, report: dict, seconds: float, big: dict | None) -> dict:
    """A row: the large-set metrics of the release, else (refused) the round's own eval metrics."""
    ev = report.get("evaluation") or {}
    return row(mode, epsilon, big or ev.get("candidate") or {},
               (report.get("forgetting") or {}).get("reference_forgetting"), seconds,
               report.get("outcome") or "packaged")


def single(env: dict, work: Path, mode: str, big_eval: Path, epsilon: float | None) -> dict:
    def edit(spec):
        if epsilon is None:
            spec["privacy"] = {"mode": "off"}
        else:
            spec["privacy"]["dp"]["target_epsilon"] = epsilon
            spec["privacy"]["dp"]["route_budget_epsilon"] = max(10.0, epsilon)
    spec = spec_copy(work, mode, "run_spec_dp.json", edit)
    report, seconds = tg(env, "peft", "run", "--spec", spec, "--output-root", work / mode, "--json", ok=(0, 11, 12))
    big = scored(Path(env["TGFLOW_HOME"]), work / mode / "support-dp.tgsp", big_eval)
    return from_round(mode, epsilon, report, seconds, big)


def simulated(env: dict, work: Path, mode: str, sites: list[str], agg: str, big_eval: Path, plain: bool) -> list[dict]:
    def edit(spec):
        if plain:
            spec["privacy"] = {"mode": "off"}
    site_specs = [spec_copy(work, f"{mode}-{Path(s).stem}", s, edit) for s in sites]
    report, _ = tg(env, "fed", "simulate", *site_specs, "--spec", spec_copy(work, f"{mode}-agg", agg, edit),
                   "--score-on", big_eval, "--json")
    fed, central = report["federated"], report["centralized"]
    return [row(mode, None, fed.get("scored") or fed, fed["forgetting"], fed["seconds"], fed["outcome"]),
            row("central-pooled", None, central.get("scored") or central, central["forgetting"], central["seconds"],
                central["outcome"])]


def n2he(env: dict, work: Path, big_eval: Path) -> dict:
    """The n2he walkthrough of docs/n2he.md in one keyring: sites, encrypted sum, decryption."""
    for name, kind in [("route-he", "he"), ("keyholder", "recipient"), ("release", "signing"),
                       ("operator", "recipient"), ("aggregator", "recipient"), ("aggregator-sign", "signing"),
                       ("site-a", "signing"), ("site-b", "signing"), ("site-c", "signing")]:
        tg(env, "key", "generate", name, "--type", kind)

    def edit(spec):
        out = spec["output"]
        out["path"] = str(work / "n2he-out" / Path(out["path"]).relative_to("../demo-out/n2he"))
        if "registry" in out:
            out["registry"] = str(work / "n2he-out" / "registry")
    seconds, updates = 0.0, []
    for s in "abc":
        spec = spec_copy(work, f"n2he-site-{s}", f"n2he_site-{s}.json", edit)
        _, dt = tg(env, "peft", "run", "--spec", spec, "--json")
        seconds += dt
        updates.append(json.loads(spec.read_text())["output"]["path"])
    agg = spec_copy(work, "n2he-agg", "n2he_aggregator.json", edit)
    summed, dt = tg(env, "fed", "aggregate", *updates, "--spec", agg, "--quorum", "3", "--json")
    seconds += dt
    holder = spec_copy(work, "n2he-holder", "n2he_keyholder.json", edit)
    report, dt = tg(env, "fed", "decrypt", summed["package"], *updates, "--spec", holder, "--aggregator",
                    "aggregator-sign", "--quorum", "3", "--json", ok=(0, 11, 12))
    release = Path(json.loads(holder.read_text())["output"]["path"])
    return from_round("n2he", None, report, seconds + dt, scored(Path(env["TGFLOW_HOME"]), release, big_eval))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    benchkit.add_json_flag(ap)
    ap.add_argument("--eval", type=int, default=384, help="eval tickets per eval set (default 384)")
    ap.add_argument("--only", default=",".join(ROWS), help="comma-separated rows to run")
    args = ap.parse_args()
    with benchkit.run("quality", "central training without privacy on the same data (pooled data for the federated "
                      "rows), same run", args.json) as res:
        res["modes"] = _measure(args)
        res["eval_examples"] = args.eval
        central = next((r["exact_match"] for r in res["modes"] if r["mode"] == "central"), None)
        res["rows"] = [benchkit.row(f"{r['mode']} exact match", r["exact_match"], "fraction",
                                    r["exact_match"] / central if central and r["exact_match"] is not None else None)
                       for r in res["modes"]]
        print_table(res["modes"])
    return 0


def _measure(args) -> list[dict]:
    only = set(args.only.split(","))
    work = Path(tempfile.mkdtemp(prefix="bench-quality-"))
    env = {**os.environ, "TGFLOW_HOME": str(work / "home"), "TGFLOW_PASSPHRASE": PASS}
    env.pop("TGFLOW_DP_TEST_SEED", None)  # production randomness: these are the numbers users get
    try:
        support, fed = eval_sets(work, args.eval)
        for name, kind in [("release", "signing"), ("operator", "recipient")]:
            tg(env, "key", "generate", name, "--type", kind)
        rows = []
        for mode, eps in [("central", None), ("dp-eps1", 1.0), ("dp-eps3", 3.0), ("dp-eps8", 8.0)]:
            if mode in only:
                rows.append(single(env, work, mode, support, eps))
        if "fed-exact" in only:
            rows += simulated(env, work, "fed-exact", [f"fed_site-{s}.json" for s in "abc"], "fed_aggregator.json",
                              fed, plain=False)
        if "fed-ffa" in only:
            rows += simulated(env, work, "fed-ffa", [f"n2he_site-{s}.json" for s in "abc"], "n2he_keyholder.json",
                              fed, plain=True)[:1]
        if "n2he" in only:
            rows.append(n2he({**env, "TGFLOW_HOME": str(work / "home-n2he")}, work, fed))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return rows


def print_table(rows: list[dict]) -> None:
    def pct(r, key):
        v, ci = r[key], r.get(f"{key}_ci95")
        return "-" if v is None else f"{v:.1%} [{ci[0]:.0%}-{ci[1]:.0%}]" if ci else f"{v:.1%}"
    print(f"{'mode':<15} {'epsilon':>7}  {'exact match':<19} {'choice accuracy':<19} {'forgetting':>10} {'seconds':>8}  outcome")
    for r in rows:
        eps = "-" if r["epsilon"] is None else f"{r['epsilon']:g}"
        fg = "-" if r["forgetting"] is None else f"{r['forgetting']:+.1%}"
        print(f"{r['mode']:<15} {eps:>7}  {pct(r, 'exact_match'):<19} {pct(r, 'choice_accuracy'):<19} {fg:>10} "
              f"{r['seconds']:>8}  {r['outcome']}")


if __name__ == "__main__":
    sys.exit(main())
