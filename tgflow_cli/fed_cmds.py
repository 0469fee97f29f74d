"""tgflow fed ...: the aggregator's side of a federated round."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from . import observed as obs
from .common import STATE, index_days_setting, keyring, passphrase
from .term import say
from .stdio import no_dash

# The options fed aggregate and fed decrypt share (the release they write, the route, the keys).
Sign = typer.Option(None, "--sign", metavar="KEY", help="Signing key of the release (default: output.signing_key).")
Recipient = typer.Option([], "--recipient", metavar="NAME", help="Recipient of the release. Repeatable (default: output.recipients).")
Out = typer.Option(None, "-o", "--out", metavar="OUT.tgsp", help="The release to write (default: output.path).")
WaitBusy = typer.Option(0, "--wait-busy", metavar="SECONDS", min=0, max=86400, help="If the route is busy, retry its lock this long before exiting 73.")
InputRoot = typer.Option(None, "--input-root", help="As for peft run.", file_okay=False)
OutputRoot = typer.Option(None, "--output-root", help="As for peft run.", file_okay=False)
PassFile = typer.Option(None, "--passphrase-file", help="Passphrase for the keys (else TGFLOW_PASSPHRASE, TGFLOW_PASSPHRASE_FILE, or a prompt).", dir_okay=False)
JsonOut = typer.Option(False, "--json", help="Print the report as one compact JSON object on the last line of stdout (also on exits 11, 12, 14).")

app = typer.Typer(no_args_is_help=True, help="Federated rounds: aggregate the sites' updates into a candidate release.")


@app.command()
def aggregate(
    updates: List[Path] = typer.Argument(None, metavar="[UPDATE]...", help="The sites' update packages (.tgsp).", dir_okay=False),
    updates_dir: Optional[Path] = typer.Option(None, "--updates-dir", metavar="DIR", help="Also every *.tgsp in this folder (for jobs: where the sites' updates arrive).", file_okay=False),
    spec: Path = typer.Option(..., "--spec", help="The route's run spec at the aggregator: federation, base model, reference and eval feeds, gate, output.", dir_okay=False),
    quorum: int = typer.Option(..., "--quorum", metavar="K", min=1, help="Fewest valid updates to aggregate; fewer exits 14 and writes nothing."),
    route: Optional[str] = typer.Option(None, "--route", metavar="R", help="The route (must match the spec's route_key)."),
    round_id: Optional[str] = typer.Option(None, "--round", metavar="ID", help="The round (must match the spec's federation.round)."),
    site: List[str] = typer.Option([], "--site", metavar="KEY", help="A trusted site signing key (name or public key file). Repeatable; default: federation.sites."),
    method: Optional[str] = typer.Option(None, "--method", metavar="exact|ffa", help="exact: sum of B·A re-factorized by SVD; ffa: average B with A frozen (default: federation.method)."),
    weights: str = typer.Option("examples", "--weights", metavar="examples|equal", help="Weight each update by its example count, or equally."),
    rank: Optional[int] = typer.Option(None, "--rank", min=1, max=4096, help="exact: the merged adapter's rank (default: lora.r)."),
    sign: Optional[str] = Sign,
    recipient: List[str] = Recipient,
    out: Optional[str] = Out,
    wait_busy: float = WaitBusy,
    input_root: Optional[Path] = InputRoot,
    output_root: Optional[Path] = OutputRoot,
    passphrase_file: Optional[Path] = PassFile,
    json_out: bool = JsonOut,
    metrics_file: Optional[Path] = obs.MetricsFile,
    pushgateway: Optional[str] = obs.Pushgateway,
    mlflow: Optional[str] = obs.Mlflow,
    otlp_endpoint: Optional[str] = obs.Otlp,
) -> None:
    """Verify every update (trusted site, route, round, base model, start adapter, LoRA settings,
    one per site, never used before), merge a quorum of them exactly for LoRA, evaluate the
    result against production on the eval feed, and release it as the route's candidate.

    Exit codes: 0 packaged (registered as candidate), 14 quorum not met (nothing written),
    11 forgetting budget exceeded, 12 evaluation gate failed, 73 route busy, 2 bad input, 3 key problem.

    Example: tgflow fed aggregate site-a.tgsp site-b.tgsp site-c.tgsp --spec aggregator.json --quorum 2 --site site-a --site site-b --site site-c
    """
    _before(out)
    from runners.recipes.aggregate import aggregate as run
    from runners.stages.aggregation import Request
    from tgsp.errors import InputError

    from .peft_cmds import render_release

    if method not in (None, "exact", "ffa") or weights not in ("examples", "equal"):
        raise InputError("--method takes exact or ffa; --weights takes examples or equal")
    STATE.compact = json_out
    paths = list(updates or []) + _in_folder(updates_dir)
    if not paths:
        raise InputError("no updates given", hint="name the update packages, or pass --updates-dir DIR")
    req = Request(paths, quorum, route, round_id, method, weights, rank, list(site), sign, list(recipient), out)
    result = _observed("fed-aggregate", spec, json_out, obs.settings(metrics_file, pushgateway, mlflow, otlp_endpoint),
                       lambda: run(spec, req, keyring(), passphrase(passphrase_file), wait_busy=wait_busy,
                                   input_root=input_root, output_root=output_root), refusals=True)
    if result is None:
        return None
    if result.outcome == "summed":
        return _summed(result.report)
    agg = result.report["training"]["aggregation"]
    say(f"round {agg['round']}: merged {len(agg['accepted'])} updates ({agg['method']}, weights {agg['weights']}, "
        f"rank {agg['rank']}; truncation error max {agg['truncation_error_max']:.3g}) in {agg['seconds']} s")
    _refusals(agg)
    render_release(result.report)


def _summed(report: dict) -> None:
    agg = report["aggregation"]
    say(f"round {agg['round']}: summed {len(agg['accepted'])} encrypted updates under HE context "
        f"{agg['context'][7:23]} in {agg['seconds']} s (no secret key here)")
    _refusals(agg)
    say(f"wrote {report['package']} ({report['package_id'][:23]}); the key holder decrypts it: "
        f"tgflow fed decrypt {report['package']} --aggregator KEY --spec SPEC --quorum K --updates-dir DIR")


@app.command()
def decrypt(
    sum_path: Path = typer.Argument(..., metavar="SUM", help="The aggregator's he-sum package (from fed aggregate under privacy.mode n2he).", dir_okay=False),
    updates: List[Path] = typer.Argument(None, metavar="[UPDATE]...", help="The sites' update packages the sum lists (custody key-holder: it re-sums them).", dir_okay=False),
    updates_dir: Optional[Path] = typer.Option(None, "--updates-dir", metavar="DIR", help="Also every *.tgsp in this folder.", file_okay=False),
    spec: Path = typer.Option(..., "--spec", help="The route's run spec at the key holder: privacy.mode n2he, federation, base model, reference and eval feeds, gate, output.", dir_okay=False),
    aggregator: str = typer.Option(..., "--aggregator", metavar="KEY", help="The aggregator's signing key: the sum must be signed by it."),
    quorum: int = typer.Option(..., "--quorum", metavar="K", min=2, help="Fewest distinct sites the sum must cover (at least 2); fewer exits 14 and decrypts nothing."),
    identity: Optional[str] = typer.Option(None, "--identity", metavar="HEKEY", help="The HE key that decrypts (default: privacy.n2he.context)."),
    key: Optional[str] = typer.Option(None, "--key", metavar="NAME", help="The recipient key that opens the sum and updates (default: privacy.n2he.key_holder)."),
    site: List[str] = typer.Option([], "--site", metavar="KEY", help="A trusted site signing key. Repeatable; default: federation.sites."),
    weights: str = typer.Option("examples", "--weights", metavar="examples|equal", help="The weighting the sites pre-weighted by (privacy.n2he.weights)."),
    sign: Optional[str] = Sign,
    recipient: List[str] = Recipient,
    out: Optional[str] = Out,
    wait_busy: float = WaitBusy,
    input_root: Optional[Path] = InputRoot,
    output_root: Optional[Path] = OutputRoot,
    passphrase_file: Optional[Path] = PassFile,
    json_out: bool = JsonOut,
    metrics_file: Optional[Path] = obs.MetricsFile,
    pushgateway: Optional[str] = obs.Pushgateway,
    mlflow: Optional[str] = obs.Mlflow,
    otlp_endpoint: Optional[str] = obs.Otlp,
) -> None:
    """The key holder's step of an n2he round: verify the aggregator's signed sum, re-screen and
    re-sum the signed updates it lists (custody key-holder), decrypt only a sum of at least
    --quorum distinct sites, round what is released, check the norm that clipping allows, then
    evaluate the result against production and release it as the route's candidate.

    Exit codes: 0 packaged (registered as candidate), 14 fewer than --quorum sites (nothing
    decrypted), 1 the sum or an update it lists failed a check, 11 forgetting budget exceeded,
    12 evaluation gate failed, 73 route busy, 2 bad input, 3 key problem.

    Example: tgflow fed decrypt sum.tgsp --updates-dir updates --spec keyholder.json --aggregator aggregator-sign --quorum 2
    """
    _before(out)
    from runners.recipes.decrypt import DecryptRequest, decrypt as run
    from runners.stages.aggregation import Request
    from tgsp.errors import InputError

    from .peft_cmds import render_release

    if weights not in ("examples", "equal"):
        raise InputError("--weights takes examples or equal")
    STATE.compact = json_out
    base = Request(list(updates or []) + _in_folder(updates_dir), quorum, None, None, "ffa", weights, None, list(site),
                   sign, list(recipient), out)
    result = _observed("fed-decrypt", spec, json_out, obs.settings(metrics_file, pushgateway, mlflow, otlp_endpoint),
                       lambda: run(spec, DecryptRequest(sum_path, aggregator, base, identity, key), keyring(),
                                   passphrase(passphrase_file), wait_busy=wait_busy, input_root=input_root,
                                   output_root=output_root))
    if result is None:
        return None
    agg = result.report["training"]["aggregation"]
    say(f"round {agg['round']}: decrypted the sum of {len(agg['accepted'])} updates ({agg['custody']} custody; "
        f"norm {agg['norm']:.4g} of at most {agg['norm_bound']:.4g}) in {agg['seconds']} s")
    _refusals(agg)
    render_release(result.report)


def _observed(command: str, spec: Path, json_out: bool, telemetry, step, *, refusals: bool = False):
    """Run the step under telemetry (tgflow_cli/observed.py). Returns its result, or None once the
    report went out as JSON; a refusal is reported and raised."""
    from tgsp.errors import RoundOutcome

    from .peft_cmds import emit_report, report_outcome

    report = (lambda obj: emit_report(obj, False)) if json_out else None
    try:
        with obs.observed(command, spec, telemetry) as ending:
            result = ending.result = step()
    except RoundOutcome as exc:
        if refusals and not json_out:
            _refusals(exc.report)
        return report_outcome(exc, report)
    if report:
        report({"ok": True, **result.report})
        return None
    return result


def _before(out: str | None) -> None:
    """What both steps check and set before any work: the release path, the index lifetime."""
    no_dash(out, "a release package written to a path")
    index_days_setting()


def _in_folder(folder: Path | None) -> list[Path]:
    from tgsp.errors import InputError

    if folder is None:
        return []
    if not folder.is_dir():
        raise InputError(f"--updates-dir {folder} is not a folder", hint="give the folder the sites' updates arrive in")
    return sorted(p for p in folder.iterdir() if p.suffix in (".tgsp", ".tssp") and not p.name.startswith("."))


def _refusals(report: dict) -> None:
    for s in report.get("accepted", []):
        say(f"  accepted {s['update'][:23]} from site {s['site']}, weight {s['weight']:.4g}")
    for r in report.get("refused", []):
        say(f"  refused {r['path']}: {r['reason']}")


@app.command()
def simulate(
    sites: List[Path] = typer.Argument(..., metavar="SITE_SPEC...", help="Each site's run spec (with its federation section and feed).", dir_okay=False),
    spec: Path = typer.Option(..., "--spec", help="The aggregator's run spec: federation, eval and reference feeds, gate.", dir_okay=False),
    input_root: Optional[Path] = InputRoot,
    score_on: Optional[Path] = typer.Option(None, "--score-on", metavar="FEED.jsonl", help="Also score both released adapters on this JSONL eval feed, which drives nothing (no selection, no gate): a larger set than the specs' own.", dir_okay=False),
    json_out: bool = typer.Option(False, "--json", help="Print the result as JSON."),
) -> None:
    """Run a federation locally, in this process, with throw-away keys: every
    site's round, the aggregation, and the same recipe trained centrally on the
    sites' pooled data (their steps added up, no privacy), side by side on the
    aggregator's eval feed. For tuning a federation before deploying it; writes
    nothing outside a temporary folder. n2he federations: simulate their ffa
    equivalent (docs/n2he.md).

    Exit codes: 0 simulated (whatever the gates said), 2 bad specs.

    Example: tgflow fed simulate examples/fed_site-a.json examples/fed_site-b.json examples/fed_site-c.json --spec examples/fed_aggregator.json
    """
    from runners.recipes.simulate import simulate as run

    from .common import emit_json
    from .term import cells, show

    from .term import warn

    from runners.spec import FeedSpec

    extra = FeedSpec(type="jsonl", uri=str(score_on)) if score_on is not None else None
    result = run(spec, list(sites), input_root=input_root, note=warn, score_on=extra)
    if json_out:
        return emit_json(result)
    from rich.table import Table

    table = Table("", "exact match", "choice accuracy", "forgetting", "outcome", "seconds")
    steps = "+".join(map(str, result["site_steps"]))
    rows = [("base model", result["base"], None),
            (f"federated ({result['method']}, {result['sites']} sites, {steps} steps)", result["federated"], True),
            (f"centralized on the pooled data ({result['centralized_steps']} steps)", result["centralized"], True)]
    for name, m, trained in rows:
        table.add_row(*cells(name, _share(m, "exact_match"), _share(m, "choice_accuracy"),
                             "" if not trained or m.get("forgetting") is None else f"{m['forgetting']:+.1%}",
                             m.get("outcome", "") if trained else "", m.get("seconds", "") if trained else ""))
    show(table)
    for name, row in (("federated", result["federated"]), ("centralized", result["centralized"])):
        if row.get("scored"):
            say(f"{name} on {score_on} ({row['scored']['examples']} examples): exact match "
                f"{_share(row['scored'], 'exact_match')}, choice accuracy {_share(row['scored'], 'choice_accuracy')}")
    gap = result["gap_exact_match"]
    if gap is not None:
        say(f"federating costs {gap * 100:+.1f} points of exact match against centralized training on the same "
            f"data (eval examples: {result['federated'].get('examples')})")


def _share(m: dict, key: str) -> str:
    v, ci = m.get(key), m.get(f"{key}_ci95")
    if v is None:
        return "-"
    return f"{v:.1%}" + (f" [{ci[0]:.0%}-{ci[1]:.0%}]" if ci else "")
