"""`tgflow fed simulate`: a federation run locally, in one process, next to its baseline.

Every site's round, the aggregation and a centralized round on the sites'
pooled data (same recipe, the sites' steps added up, no privacy) run here,
through the real recipes, with throw-away keys in a temporary keyring: a
user tunes a federation (steps, learning rate, α, method) before deploying
it, and sees what federating costs against the training they would
otherwise run. Nothing outside the temporary folder is read or written
except the specs' own inputs (model, feeds).

n2he federations are refused: their release is the plaintext ``ffa`` merge
of the same clipped updates within CKKS error (tests/n2he), so simulate the
``ffa`` spec, and set ``max_update_norm`` above the update norms it prints.
"""

from __future__ import annotations

import json
import secrets
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

from tgsp import Keyring
from tgsp.errors import InputError, RoundOutcome

from ..data import feeds as feeds_mod
from ..learn import model as model_mod
from ..spec import FeedSpec, load_spec, resolve
from ..stages import inputs as inputs_stage
from ..stages.aggregation import Request
from .aggregate import aggregate
from .round import run_round
from .trial import score

RELEASE, OPERATOR, AGGREGATOR = "sim-release", "sim-operator", "sim-aggregator"
_METRICS = ("exact_match", "exact_match_ci95", "choice_accuracy", "choice_accuracy_ci95", "loss", "examples")


def simulate(aggregator_spec: str | Path, site_specs: list[str | Path], *, input_root: Path | None = None,
             note: Callable[[str], None] = lambda _line: None, score_on: FeedSpec | None = None) -> dict[str, Any]:
    """Run the federation and its centralized baseline; returns both rows and the gap.
    ``note`` hears a line as each round starts. ``score_on``: also score both released adapters
    on this feed, which drives nothing (no selection, no gate): a larger eval set than the
    specs' own, without the leak filter it would bring."""
    if not site_specs:
        raise InputError("fed simulate needs at least one site spec", hint="name each site's run spec after --spec")
    agg_spec, agg_raw, _ = _load(aggregator_spec, input_root)
    sites = [_load(s, input_root) for s in site_specs]
    _check(agg_spec, [s for s, _, _ in sites])
    with tempfile.TemporaryDirectory(prefix="tgflow-simulate-") as tmp:
        work = Path(tmp)
        keyring, passphrase = _keys(work, len(sites))
        names = [f"sim-site-{k}" for k in range(len(sites))]
        fed = _federated(work, agg_raw, [raw for _, raw, _ in sites], names, keyring, passphrase, note)
        note("centralized round on the pooled data ...")
        central = _centralized(work, agg_raw, sites, keyring, passphrase)
        if score_on is not None:
            examples = feeds_mod.load_feed(score_on, Path.cwd()).examples
            for row, role in ((fed, "aggregator"), (central, "central")):
                row["scored"] = _scored(work / role / "out.tgsp", keyring, passphrase, examples)
    steps = [s.training.steps for s, _, _ in sites]
    return {"method": agg_spec.federation.method, "sites": len(sites), "site_steps": steps,
            "centralized_steps": central.pop("steps"), "base": fed.pop("base"), "federated": fed,
            "centralized": central,
            "gap_exact_match": _gap(central, fed, "exact_match"),
            "gap_choice_accuracy": _gap(central, fed, "choice_accuracy")}


def _load(path: str | Path, input_root: Path | None) -> tuple[Any, dict, Path]:
    """The parsed spec, its raw JSON with every input path made absolute, and its input folder."""
    spec, base, _ = load_spec(path)
    base = Path(input_root).resolve() if input_root is not None else base
    raw = json.loads(Path(path).read_text(encoding="utf-8"))
    raw["base_model_ref"] = str(model_mod.resolve_model(spec.base_model_ref, base))
    for name in ("feed", "eval", "reference"):
        if isinstance(raw.get(name), dict) and getattr(spec, name).type != "hf":
            raw[name]["uri"] = str(resolve(base, raw[name]["uri"]))
    return spec, raw, base


def _check(agg, sites: list) -> None:
    if agg.federation is None or any(s.federation is None for s in sites):
        raise InputError("fed simulate takes the aggregator's spec and the sites' specs, each with a federation "
                         "section", hint="see examples/fed_aggregator.json and examples/fed_site-a.json")
    if any(s.privacy.mode == "n2he" for s in [agg, *sites]):
        raise InputError("fed simulate runs plaintext federations; an n2he release is the ffa merge of the same "
                         "clipped updates within CKKS error", hint="simulate the ffa equivalent (privacy.mode off, "
                         "federation.method ffa); docs/n2he.md says how to choose max_update_norm")
    if any(s.training.steps is None for s in sites):
        raise InputError("fed simulate needs training.steps at every site (the baseline trains their sum)")
    if any(s.feed is None for s in sites):
        raise InputError("a site spec has no feed", hint="give each site spec its training feed")


def _keys(work: Path, sites: int) -> tuple[Keyring, Any]:
    pw = secrets.token_urlsafe(24)
    keyring = Keyring(work / "keys")
    for name, kind in [(RELEASE, "signing"), (OPERATOR, "recipient"), (AGGREGATOR, "recipient"),
                       *((f"sim-site-{k}", "signing") for k in range(sites))]:
        keyring.generate(name, kind, lambda: pw)
    return keyring, (lambda: pw)


def _rewrite(raw: dict, work: Path, role: str, signing: str, recipients: list[str]) -> Path:
    """A copy of a spec for this simulation: its outputs in ``work``, its keys the simulation's."""
    spec = json.loads(json.dumps(raw))
    spec["output"] = {**spec["output"], "path": str(work / role / "out.tgsp"), "signing_key": signing,
                      "recipients": recipients, "registry": str(work / "registry")}
    spec["output"].pop("state_dir", None)
    path = work / f"{role}.json"
    path.write_text(json.dumps(spec), encoding="utf-8")
    return path


def _federated(work: Path, agg_raw: dict, site_raws: list[dict], names: list[str], keyring, passphrase,
               note: Callable[[str], None]) -> dict:
    t0, updates = time.perf_counter(), []
    for k, (raw, name) in enumerate(zip(site_raws, names)):
        note(f"site {k + 1} of {len(names)} ...")
        raw = {**raw, "federation": {**raw["federation"], "aggregator": AGGREGATOR, "sites": names}}
        result = run_round(_rewrite(raw, work, name, name, [OPERATOR]), keyring, passphrase)
        updates.append(result.package)
    note("aggregation ...")
    agg_raw = {**agg_raw, "federation": {**agg_raw["federation"], "aggregator": AGGREGATOR, "sites": names}}
    spec = _rewrite(agg_raw, work, "aggregator", RELEASE, [OPERATOR, AGGREGATOR])
    report = _report(lambda: aggregate(spec, Request(updates, len(updates)), keyring, passphrase))
    return {**_row(report, time.perf_counter() - t0), "base": _metrics(report.get("evaluation", {}).get("base"))}


def _centralized(work: Path, agg_raw: dict, sites: list, keyring, passphrase) -> dict:
    """The same recipe on the sites' pooled data: one round, the sites' steps added up, no privacy."""
    rows = []
    for spec, raw, base in sites:
        tok = model_mod.load_tokenizer(Path(raw["base_model_ref"]))
        feed, = inputs_stage.read_feeds(inputs_stage.Opened(spec, base, work, ""), keyring, tok, ("feed",))
        rows += [{"prompt": e.prompt, "completion": e.target} if e.prompt else {"text": e.target} for e in feed.examples]
    pooled = work / "pooled.jsonl"
    pooled.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    raw = json.loads(json.dumps(sites[0][1]))
    raw.pop("federation")
    steps = sum(s.training.steps for s, _, _ in sites)
    raw.update({"route_key": "simulate-central", "privacy": {"mode": "off"}, "feed": {"type": "jsonl", "uri": str(pooled)},
                "eval": agg_raw["eval"], "reference": agg_raw["reference"], "policy": agg_raw.get("policy", {}),
                "training": {**raw["training"], "steps": steps, "init": "base"}})
    path = _rewrite(raw, work, "central", RELEASE, [OPERATOR])
    t0 = time.perf_counter()
    report = _report(lambda: run_round(path, keyring, passphrase))
    return {**_row(report, time.perf_counter() - t0), "steps": steps, "train_examples": len(rows)}


def _scored(package: Path, keyring, passphrase, examples: list) -> dict | None:
    """The released adapter's metrics on the extra eval feed; None when its gate refused it."""
    if not package.exists():
        return None
    idents = keyring.identities(OPERATOR, passphrase)
    return _metrics(score(package, keyring.trust_policy(), idents, examples))


def _report(call) -> dict:
    """The round's report, also when its gate refused it (the numbers are what a simulation is for)."""
    try:
        return {**call().report, "outcome": "packaged"}
    except RoundOutcome as exc:
        return {**exc.report, "outcome": exc.outcome}


def _row(report: dict, seconds: float) -> dict:
    ev = report.get("evaluation") or {}
    forgetting = (report.get("forgetting") or {}).get("reference_forgetting")
    return {**_metrics(ev.get("candidate")), "forgetting": forgetting, "outcome": report.get("outcome"),
            "seconds": round(seconds, 1)}


def _metrics(m: dict | None) -> dict:
    return {k: (m or {}).get(k) for k in _METRICS}


def _gap(central: dict, fed: dict, key: str) -> float | None:
    a, b = central.get(key), fed.get(key)
    return None if a is None or b is None else round(a - b, 6)
