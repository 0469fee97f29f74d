"""tgflow peft ...: run one continuous-learning round in this process."""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
from enum import Enum
from pathlib import Path
from typing import Iterator, List, Optional

import typer

from . import completions, observed as obs, roundlog
from .common import STATE, emit_json, index_days_setting, keyring, passphrase
from .term import say, styled, warn


class Cluster(str, Enum):
    sagemaker = "sagemaker"
    vertex = "vertex"
    spark = "spark"


class PlanVerdict(str, Enum):
    likely = "likely"
    marginal = "marginal"


app = typer.Typer(no_args_is_help=True, help="Continuous learning of LoRA adapters (in-process, GPU when present).")


@contextlib.contextmanager
def _graceful_stop() -> Iterator[threading.Event]:
    """SIGTERM (a Kubernetes eviction) and Ctrl-C set a flag: training writes a
    checkpoint after the current step and exits with code 75."""
    stop = threading.Event()
    previous = {}

    def handler(signum, frame):
        if stop.is_set():  # a second signal: stop now
            raise KeyboardInterrupt
        stop.set()
        warn(f"received signal {signum}: checkpointing after this step")

    for sig in (signal.SIGTERM, signal.SIGINT):
        previous[sig] = signal.signal(sig, handler)
    try:
        yield stop
    finally:
        for sig, h in previous.items():
            signal.signal(sig, h)


def _launch(spec, wait_busy, flags: dict, nproc: int, nnodes: int | None, node_rank: int, addr, port: int,
            cluster: str | None) -> int:
    """Start the round's processes: torch's elastic launcher (runners/distributed/launch.py), on this
    node's place in a platform's cluster (runners/distributed/clusters.py), or Spark's TorchDistributor."""
    from runners.distributed.launch import launch

    argv = ["peft", "run", "--spec", str(spec), "--wait-busy", str(wait_busy)]
    for flag, value in flags.items():
        argv += [flag] if value is True else [flag, str(value)] if value not in (None, False) else []
    if cluster == "spark":
        from runners.distributed import spark as spark_launch

        rank = Path(__file__).resolve().with_name("spark_rank.py")  # beside this file; the same image on every node
        return spark_launch.launch(argv, nproc * (nnodes or 1), output_root=flags["--output-root"], rank_script=rank)
    if cluster is not None:
        from runners.distributed.clusters import placement

        where = placement(cluster, nnodes)
        nnodes, node_rank, addr = where.nnodes, where.node_rank, where.master_addr
        port = port if where.master_port is None else where.master_port
    elif (nnodes or 1) > 1 and addr is None:
        from tgsp.errors import InputError

        raise InputError(f"--nnodes {nnodes} needs --master-addr (node 0's address) and this node's --node-rank",
                         hint="or let the platform place the node: --cluster sagemaker|vertex|spark")
    return launch(argv, nproc, nnodes=nnodes or 1, node_rank=node_rank, master_addr=addr, master_port=port)


@app.command()
def run(
    spec: Path = typer.Option(..., "--spec", help="The run spec (JSON). See docs/peft-run.md."),
    passphrase_file: Optional[Path] = typer.Option(None, "--passphrase-file", help="Passphrase for the signing key (else TGFLOW_PASSPHRASE, TGFLOW_PASSPHRASE_FILE, or a prompt).", dir_okay=False),
    json_out: bool = typer.Option(False, "--json", help="Print the round's report as one compact JSON object on the last line of stdout (also on exits 10-13)."),
    pretty: bool = typer.Option(False, "--pretty", help="With --json: indent the report."),
    skip_ok: bool = typer.Option(False, "--skip-ok", help="Exit 0, not 10, when the round is skipped because nothing is new (for schedulers: a quiet night is a success)."),
    input_root: Optional[Path] = typer.Option(None, "--input-root", help="Resolve relative input paths (model, feeds) here instead of the spec's folder (for containers).", file_okay=False),
    output_root: Optional[Path] = typer.Option(None, "--output-root", help="Write the package (basename of output.path) and the route state here (for containers).", file_okay=False),
    wait_busy: float = typer.Option(0, "--wait-busy", metavar="SECONDS", min=0, max=86400, help="If another round holds the route, retry its lock this long before exiting 73 (route busy)."),
    nproc_per_node: int = typer.Option(1, "--nproc-per-node", min=1, max=1024, help="Start this many processes on this node with torch's elastic launcher (torchrun's), gloo on CPU, NCCL on GPU; rank 0 writes. Exits with the round's code."),
    nnodes: Optional[int] = typer.Option(None, "--nnodes", min=1, max=4096, help="With --nproc-per-node: the number of nodes (static rendezvous on --master-addr). Default 1, or what --cluster finds (which must then agree)."),
    node_rank: int = typer.Option(0, "--node-rank", min=0, help="With --nnodes: this node's rank."),
    master_addr: Optional[str] = typer.Option(None, "--master-addr", help="With --nnodes: rank 0's node address."),
    master_port: int = typer.Option(29500, "--master-port", min=1, max=65535, help="With --nnodes: the rendezvous port."),
    require_plan: Optional[PlanVerdict] = typer.Option(None, "--require-plan", help="Under DP: refuse the round (exit 15), before any epsilon is charged, unless the plan's verdict is at least this (likely, or marginal). See tgflow privacy plan."),
    cluster: Optional[Cluster] = typer.Option(None, "--cluster", help="Read the nodes and this node's rank from the platform: sagemaker (resourceconfig.json), vertex (CLUSTER_SPEC); spark: start the ranks on the Spark cluster with TorchDistributor (Databricks)."),
    metrics_file: Optional[Path] = obs.MetricsFile,
    pushgateway: Optional[str] = obs.Pushgateway,
    mlflow: Optional[str] = obs.Mlflow,
    otlp_endpoint: Optional[str] = obs.Otlp,
) -> None:
    """Run one round: read the feed, apply the novelty policy, train the LoRA,
    evaluate, enforce the forgetting budget and the evaluation gate, and write a
    signed, encrypted TGSP package with its evidence.

    Exit codes: 0 packaged (and registered as candidate), 10 skipped (low novelty), 11 forgetting
    budget exceeded, 12 evaluation gate failed, 13 privacy budget exhausted, 15 DP plan below
    --require-plan (nothing charged), 73 route busy (nothing
    changed), 75 interrupted (checkpoint saved; re-run to resume), 2 bad input, 3 key problem.

    Example: tgflow peft run --spec examples/run_spec.json
    """
    # Launcher flags always launch, even where a platform sets WORLD_SIZE/RANK for its nodes
    # (Vertex AI, PyTorchJob); the ranks it starts get none of them. Without flags, a set
    # WORLD_SIZE makes this process one rank (torchrun, Azure ML).
    if cluster is not None or nproc_per_node > 1 or (nnodes or 1) > 1:
        flags = {"--passphrase-file": passphrase_file, "--input-root": input_root, "--output-root": output_root,
                 "--json": json_out, "--pretty": pretty, "--skip-ok": skip_ok,
                 "--require-plan": require_plan.value if require_plan else None, "--metrics-file": metrics_file,
                 "--pushgateway": pushgateway, "--mlflow": mlflow, "--otlp-endpoint": otlp_endpoint}
        raise typer.Exit(_launch(spec, wait_busy, flags, nproc_per_node, nnodes, node_rank, master_addr, master_port,
                                 cluster.value if cluster else None))
    _run_here(spec, passphrase_file, json_out, pretty, skip_ok, input_root, output_root, wait_busy,
              require_plan.value if require_plan else None,
              obs.settings(metrics_file, pushgateway, mlflow, otlp_endpoint))


def _run_here(spec, passphrase_file, json_out, pretty, skip_ok, input_root, output_root, wait_busy,
              require_plan: str | None, telemetry) -> None:
    """The round in this process (one rank when started by a launcher)."""
    from runners.recipes.round import run_round

    STATE.compact = json_out and not pretty  # every JSON this command prints, errors included, is one line
    index_days_setting()
    bar, progress = roundlog.for_round(terminal=sys.stderr.isatty() and not os.environ.get("CI"), json_out=json_out)
    from tgsp.errors import NoveltySkipped, RoundOutcome

    report = (lambda obj: emit_report(obj, pretty)) if json_out else None
    try:
        with obs.observed("peft-run", spec, telemetry, skip_ok=skip_ok) as ending, _graceful_stop() as stop, \
                (bar or contextlib.nullcontext()):
            result = ending.result = run_round(spec, keyring(), passphrase(passphrase_file, key=_signing_key(spec)),
                                               stop=stop, progress=progress, notes=roundlog.notes(bar),
                                               require_plan=require_plan, input_root=input_root,
                                               output_root=output_root, wait_busy=wait_busy)
        if result.outcome == "follower":  # torchrun, rank > 0: rank 0 reports; every rank ends with its code
            code = result.report["code"]
            raise typer.Exit(0 if skip_ok and code == 10 else code)
    except NoveltySkipped as exc:
        if not skip_ok:
            return report_outcome(exc, report)
        if report:
            return report({"ok": True, "outcome": exc.outcome, **exc.report})
        warn(f"skipped: {exc} (--skip-ok: exit 0)")
        return None
    except RoundOutcome as exc:  # 11, 12, 13: the numbers matter most when the round did not ship
        return report_outcome(exc, report)
    _warn_test_seed(result.report)
    if report:
        return report({"ok": True, **result.report})
    _render(result.report)


def _signing_key(spec: Path) -> str | None:
    """The spec's signing key, to name it in a passphrase prompt (run_round reports spec errors)."""
    from runners.spec import load_spec
    from tgsp.errors import TgflowError

    try:
        return load_spec(spec)[0].output.signing_key
    except TgflowError:
        return None


def report_outcome(exc, report) -> None:
    """A round that ended without a package: with --json, its numbers and the error, then the exit code."""
    if report:
        from .errors import classify

        message, hint, code = classify(exc)
        report({"ok": False, "outcome": exc.outcome, **exc.report,
                "error": {"message": message, "hint": hint, "exit_code": code, "type": type(exc).__name__}})
        STATE.reported = True
    raise exc


def emit_report(obj, pretty: bool) -> None:
    """The round's report: one compact line (the last line of stdout), or indented with --pretty."""
    import json

    text = json.dumps(obj, indent=2 if pretty else None, sort_keys=True, default=str,
                      separators=None if pretty else (",", ":"))
    sys.stdout.write(text + "\n")


@app.command()
def validate(
    spec: Path = typer.Option(..., "--spec", help="The run spec (JSON)."),
    json_out: bool = typer.Option(False, "--json", help="Print the checks as JSON."),
    input_root: Optional[Path] = typer.Option(None, "--input-root", help="As for peft run.", file_okay=False),
    output_root: Optional[Path] = typer.Option(None, "--output-root", help="As for peft run.", file_okay=False),
) -> None:
    """Check the spec, the model, the feeds, the keys and the output location
    without training, and list every problem. Exit 0 when all hold, 2 if any fails.

    Example: tgflow peft validate --spec examples/run_spec.json
    """
    from runners.recipes.validate import validate as run_checks
    from tgsp.errors import InputError

    result = run_checks(spec, keyring(), input_root=input_root, output_root=output_root)
    if json_out:
        emit_json(result)
    else:
        for c in result["checks"]:
            say(styled("ok    " if c["ok"] else "FAIL  ", "green" if c["ok"] else "bold red"), f"{c['name']}: {c['detail']}")
    if not result["ok"]:
        STATE.reported = True
        bad = [c["name"] for c in result["checks"] if not c["ok"]]
        raise InputError(f"run spec {spec}: {len(bad)} check(s) failed: {', '.join(bad)}")


@app.command()
def budget(
    spec: Path = typer.Option(..., "--spec", help="The run spec (JSON) of a privacy.mode \"dp\" route."),
    json_out: bool = typer.Option(False, "--json", help="Print the status as JSON."),
    input_root: Optional[Path] = typer.Option(None, "--input-root", help="As for peft run.", file_okay=False),
    output_root: Optional[Path] = typer.Option(None, "--output-root", help="As for peft run.", file_okay=False),
) -> None:
    """Show a DP route's privacy budget: ε spent (from the ledger), what is
    left, and whether the spec's next round fits. Trains nothing.

    Exit codes: 0 the next round fits (in full or in part), 13 not one more
    step fits (peft run would refuse the round), 2 bad spec or ledger.

    Example: tgflow peft budget --spec examples/run_spec_dp.json
    """
    from runners.recipes.round import privacy_budget

    status = privacy_budget(spec, keyring(), input_root=input_root, output_root=output_root)
    nxt = status["next_round"]
    if json_out:
        emit_json(status)
    else:
        left = status["remaining_epsilon"]
        say(f"route {status['route']}: epsilon {status['route_epsilon']:.4g} spent at delta {status['delta']:g} "
                  f"({status['accountant']}; RDP {status['route_epsilon_rdp']:.4g}), budget "
                  f"{status['route_budget_epsilon'] if status['route_budget_epsilon'] is not None else 'none'}"
                  + (f", {left:.4g} left" if left is not None else ""))
        say(f"rounds: {', '.join(f'{k} {v}' for k, v in sorted(status['rounds'].items())) or 'none yet'}")
        say(f"next round: {nxt['examples']} examples, q {nxt['sample_rate']:.4g}, sigma "
                  f"{nxt['noise_multiplier']:.4g}, {nxt['steps_within_budget']} of {nxt['planned_steps']} steps fit "
                  f"-> {nxt['outcome']}; route epsilon after: {nxt['route_epsilon_after']:.4g}")
    if nxt["steps_within_budget"] == 0:
        from tgsp.errors import BudgetExhausted

        STATE.reported = True  # the status above is the JSON report
        raise BudgetExhausted(f"privacy budget exhausted: not one more step fits route {status['route']}'s budget",
                              status, hint="the route is done; start a new route or raise its budget deliberately")


def _warn_test_seed(report: dict) -> None:
    pv = report.get("privacy") or {}
    if pv.get("mode") == "dp" and str(pv.get("randomness", "")).startswith("test-seed"):
        warn(styled("warning:", "bold yellow"), " TGFLOW_DP_TEST_SEED is set: this round is NOT private "
             "(its sampling and noise can be replayed); never ship its package")


def _ci(m: dict, key: str) -> str:
    """ " [lo-hi%]": the 95% interval, when the report has one."""
    ci = m.get(f"{key}_ci95")
    return f" [{ci[0]:.0%}-{ci[1]:.0%}]" if isinstance(ci, list) and len(ci) == 2 else ""


def _metric_line(name: str, m: dict | None) -> str:
    if not m:
        return ""
    parts = [f"exact match {m['exact_match']:.0%}{_ci(m, 'exact_match')}" if m.get("exact_match") is not None else "",
             f"choice accuracy {m['choice_accuracy']:.0%}{_ci(m, 'choice_accuracy')} of {m['choices']}"
             if m.get("choice_accuracy") is not None else "",
             f"loss {m['loss']:.4g}"]
    return f"  {name}: " + ", ".join(p for p in parts if p)


def _render(report: dict) -> None:
    tr, nv = report["training"], report["novelty"]
    say(f"novelty: {nv['novel']} of {nv['examples']} examples novel (threshold {nv['threshold']}, "
        f"{nv['duplicates']} duplicates, {nv.get('near_duplicates', 0)} near-duplicates)")
    if report.get("parent"):
        say(f"started from production version {report['parent']['version']} ({report['parent']['package_id'][:23]})")
    if tr.get("resumed_from_step"):
        say(f"resumed from the checkpoint at step {tr['resumed_from_step']}")
    if "withheld_under_dp" in tr:
        say(f"training: {tr['steps']} steps (loss, token counts and timings withheld under DP)")
    else:
        say(f"training: {tr['steps']} steps, {tr['tokens']} tokens, {tr['tokens_per_second']} tokens/s, "
            f"loss {tr['loss_first']} -> {tr['loss_last']}")
    pv = report.get("privacy") or {}
    if pv.get("mode") == "dp":
        say(f"privacy: epsilon {pv['epsilon']:.4g} at delta {pv['delta']:g} this round ({pv['accountant']}; "
            f"sigma {pv['noise_multiplier']:.4g}, q {pv['sample_rate']:.4g}, {pv['steps']} steps); route epsilon "
            f"{pv['route_epsilon']:.4g} of {pv['route_budget_epsilon'] if pv['route_budget_epsilon'] else 'no budget'}")
    if report["outcome"] == "update":
        return _render_update(report)
    render_release(report)


def _render_update(report: dict) -> None:
    fed = report["federation"]
    gate, he = fed.get("topk_gate"), fed.get("he")
    if he:
        say(f"update for round {fed['round']} (ffa, n2he): {fed['modules']} modules, {he['values']} values in "
            f"{he['ciphertexts']} CKKS ciphertexts ({he['ciphertext_bytes']} bytes) under HE context "
            f"{he['context'][7:23]}, pre-weighted by {he['weight']}, clipped to norm {he['max_update_norm']:g}"
            f"{' (it was ' + format(he['norm_before_clip'], '.4g') + ')' if he['clipped'] else ''}")
    else:
        say(f"update for round {fed['round']} ({fed['method']}): {fed['modules']} modules, "
            f"{fed['bytes']['encoded']} bytes encoded from {fed['bytes']['float32']} float32 "
            f"({fed['bytes']['float32'] / max(fed['bytes']['encoded'], 1):.1f}x), weight {fed['examples']} "
            f"({fed['weight_basis']})")
    if gate:
        say(f"top-k {gate['topk']}: held-out loss {gate['eval_loss_dense']} dense, {gate['eval_loss_sparse']} sparse "
            f"-> sent {gate['sent']}")
    say(styled("update", "bold green"), f" {report['package']} {report['package_id']} (encrypted to the aggregator"
        f"{' and the key holder' if he and he.get('custody') == 'key-holder' else ''})")


def render_release(report: dict) -> None:
    """The evaluation, forgetting and package lines of a released round (peft run, fed aggregate)."""
    ev, fg = report["evaluation"], report["forgetting"]
    say(f"eval set ({ev['eval_examples']} examples):")
    for name, key in (("base model", "base"), ("production", "previous_release"), ("this adapter", "candidate")):
        if ev.get(key):
            say(_metric_line(name, ev[key]))
    say(f"forgetting against the {fg.get('against', 'base model')}: {fg['forgetting'] * 100:+.2f}% "
        f"(budget {fg['budget'] * 100:.1f}%; reference loss {fg['reference_loss_before']} -> {fg['reference_loss_after']})")
    for version, m in (fg.get("earlier_heldout") or {}).items():
        say(f"  kept round {version}'s held-out set:" + _metric_line("", m["after"]).split(":", 1)[1]
            + f" (was {m['before'].get('exact_match', 0):.0%} exact)")
    say(styled("packaged", "bold green"), f" {report['package']} version {report['version']} {report['package_id']}")
    say(f"registered as candidate in {report['registered']['path']}" if report.get("registered") else "")


@app.command()
def generate(
    package: Path = typer.Option(..., "--package", help="The adapter package (verified first).", dir_okay=False),
    identity: List[str] = typer.Option(..., "--identity", help="Recipient key to decrypt it with: a name in the keyring, or a key file (mode 600) carried to this machine. Repeatable."),
    prompt: str = typer.Option(..., "--prompt", help="The prompt, e.g. a ticket ending in 'Resolution:'."),
    against: Optional[str] = typer.Option(None, "--against", help="'base': also show the base model's answer (same seed)."),
    base_model: Optional[Path] = typer.Option(None, "--base-model", help="Base model folder (default: the one the package's evidence names; its digest is checked).", file_okay=False),
    max_new_tokens: int = typer.Option(32, "--max-new-tokens", help="Most tokens to generate (1 to 4096)."),
    temperature: Optional[float] = typer.Option(None, "--temperature", help="Sample at this temperature (above 0). Without --temperature, --top-p or --top-k: greedy."),
    top_p: Optional[float] = typer.Option(None, "--top-p", help="Sample from the smallest set of tokens whose probability reaches this (0 to 1)."),
    top_k: Optional[int] = typer.Option(None, "--top-k", help="Sample from the K most likely tokens."),
    num_samples: int = typer.Option(1, "--num-samples", help="How many completions to sample (1 to 64; needs sampling)."),
    seed: Optional[int] = typer.Option(None, "--seed", help="Seed for sampling: the same seed gives the same samples. Default: a random one, printed."),
    stop: Optional[List[str]] = typer.Option(None, "--stop", help="Stop a completion at this text, which is left out. Repeatable."),
    passphrase_file: Optional[Path] = typer.Option(None, "--passphrase-file", help="Passphrase for the identity key.", dir_okay=False),
    he: bool = typer.Option(False, "--he", help="EXPERIMENTAL: also generate with the LoRA delta computed under CKKS on encrypted activations (slow; hides activations from the adapter plane, not the adapter from the key holder: docs/he-lora.md)."),
    json_out: bool = typer.Option(False, "--json", help="Print the completions (every sample) as JSON."),
) -> None:
    """Try an adapter: verify the package, decrypt it in memory (never to disk), apply it
    to its base model and print its completion of --prompt: greedy, or sampled with
    --temperature/--top-p/--top-k (transformers' own generation config).

    Example: tgflow peft generate --package demo-out/support.tgsp --identity operator --prompt "Ticket #1: The VPN client fails with error 809 after the latest update.\\nResolution:" --against base --base-model examples/tiny-base
    """
    from runners.learn.sampling import Sampling
    from runners.recipes.trial import generate as run_generate
    from tgsp.errors import InputError

    if against not in (None, "base"):
        raise InputError(f"--against {against!r}: only 'base' is supported", hint="use --against base")
    sampling = Sampling(max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p, top_k=top_k,
                        num_samples=num_samples, seed=seed, stop=tuple(s.replace("\\n", "\n") for s in stop or ()))
    kr = keyring()
    pp = passphrase(passphrase_file, key=", ".join(identity))
    idents = [k for name in identity for k in kr.identities(name, pp)]
    text = prompt.replace("\\n", "\n")
    out = run_generate(package, kr.trust_policy(kind="adapter"), idents, text, against_base=against == "base",
                       base_model=base_model, sampling=sampling, he=he)
    completions.show(out, as_json=json_out)
