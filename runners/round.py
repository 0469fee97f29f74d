"""One continuous-learning round: spec -> novelty -> train -> gates -> package.

The shell around the recipe. Every decision is recorded as an evidence
event; a round that ends without a package (skipped, rejected) still writes
its evidence and a report into the route's state folder. The route state
(novelty history, last version) changes only when a package was written.
"""

from __future__ import annotations

import contextlib
import json
import math
import platform
import tempfile
import threading
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any, Callable, NoReturn

import tgsp
from tgsp import clock, evidence
from tgsp.atomic import prepare_parent, write_bytes
from tgsp.errors import BudgetExhausted, ForgettingExceeded, GateFailed, InputError, NoveltySkipped, RoundOutcome

from . import feeds as feeds_mod, model as model_mod, novelty, privacy
from .batches import tokenize
from .checkpoint import CheckpointStore
from .dp_sgd import DPRandom
from .evaluate import mean_loss, relative_change
from .ledger import Ledger
from .spec import RunSpec, load_spec, resolve
from .train import DPRun, add_lora, total_steps, train

PACKAGED = "packaged"


@dataclass
class RoundResult:
    outcome: str
    report: dict[str, Any]
    package: Path | None = None
    package_id: str | None = None


@dataclass
class Context:
    spec: RunSpec
    base: Path
    digest: str
    state: Path
    now: clock.Clock = clock.utcnow
    events: list[dict] = field(default_factory=list)
    ledger: Ledger | None = None  # set once a DP round has charged the ledger
    round_id: str = ""

    def record(self, type_: str, data: Any) -> None:
        self.events.append(evidence.event(type_, data, self.now()))

    def settle(self, outcome: str) -> None:
        """Write the round's outcome into its ledger entry (a DP round only)."""
        if self.ledger is not None:
            self.ledger.settle(self.round_id, {"outcome": outcome, "settled": clock.fmt(self.now())})


def state_dir(spec: RunSpec, out_base: Path) -> Path:
    """The route's state folder. A relative ``state_dir`` must stay inside the
    output base: under --output-root, one that climbs out (``../..``) would
    put the DP ledger on a container's ephemeral disk."""
    if spec.output.state_dir:
        where = resolve(out_base, spec.output.state_dir)
        if not Path(spec.output.state_dir).is_absolute() and not where.is_relative_to(out_base):
            raise InputError(f"output.state_dir {spec.output.state_dir!r} leaves the output folder {out_base}",
                             hint="give a folder inside the output folder, or an absolute path on durable storage")
        return where
    return resolve(out_base, spec.output.path).parent / ".tgflow-state" / spec.route_key


def environment(device: model_mod.Device) -> dict[str, Any]:
    import peft
    import torch
    import transformers

    env = {"python": platform.python_version(), "platform": platform.platform(), "torch": torch.__version__,
           "transformers": transformers.__version__, "peft": peft.__version__, "tgflow": tgsp.package.TOOL,
           "device": device.name, "dtype": device.dtype_name, "cpu_threads": torch.get_num_threads()}
    if device.name == "cuda":
        env["gpu"] = torch.cuda.get_device_name(0)
    return env


def open_spec(spec_path: str | Path, input_root: Path | None, output_root: Path | None) -> tuple[RunSpec, Path, Path, str]:
    """(spec, input base, output base, digest), with the container roots applied."""
    spec, base, digest = load_spec(spec_path)
    out_base = base
    if input_root is not None:
        base = Path(input_root).resolve()
    if output_root is not None:
        out_base = Path(output_root).resolve()
        spec = spec.model_copy(update={"output": spec.output.model_copy(
            update={"path": Path(spec.output.path).name})})
    return spec, base, out_base, digest


def privacy_budget(spec_path: str | Path, keyring: tgsp.Keyring, *, input_root: Path | None = None,
                   output_root: Path | None = None) -> dict[str, Any]:
    """The route's spent and remaining ε, and how the spec's next round would fit.

    Reads the ledger and the feed (to count its distinct examples, N); trains nothing."""
    spec, base, out_base, _ = open_spec(spec_path, input_root, output_root)
    if spec.privacy.mode != "dp":
        raise InputError(f"privacy.mode is {spec.privacy.mode!r}: route {spec.route_key} keeps no privacy ledger",
                         hint="the budget applies to privacy.mode \"dp\" routes")
    privacy.check_spec(spec)
    dp = spec.privacy.dp
    state = state_dir(spec, out_base)
    ledger = Ledger.load(state, spec.route_key)
    tok = model_mod.load_tokenizer(model_mod.resolve_model(spec.base_model_ref, base))
    chat = (lambda msgs: tok.apply_chat_template(msgs, tokenize=False)) if getattr(tok, "chat_template", None) else None
    feed = feeds_mod.load_feed(spec.feed, base, chat_template=chat, keyring=keyring)
    n = len({e.digest for e in feed.examples})  # under DP only in-feed duplicates are dropped
    plan = privacy.plan(spec, n, ledger.events())
    spent = ledger.spent(dp.target_delta, dp.accountant)
    after = plan.summary(plan.allowed_steps, "n/a")
    statuses: dict[str, int] = {}
    for e in ledger.entries:
        key = e["status"] if e["status"] != "settled" else e.get("outcome", "settled")
        statuses[key] = statuses.get(key, 0) + 1
    return {
        "route": spec.route_key, "ledger": str(ledger.path), "accountant": dp.accountant, "delta": dp.target_delta,
        "rounds": statuses, "route_epsilon": round(spent, 6),
        "route_epsilon_rdp": round(ledger.spent(dp.target_delta, "rdp"), 6),
        "route_budget_epsilon": dp.route_budget_epsilon,
        "remaining_epsilon": None if dp.route_budget_epsilon is None else round(max(0.0, dp.route_budget_epsilon - spent), 6),
        "next_round": {"examples": n, "sample_rate": plan.config.sample_rate,
                       "noise_multiplier": plan.config.noise_multiplier, "planned_steps": plan.planned_steps,
                       "steps_within_budget": plan.allowed_steps, "epsilon": after["epsilon"],
                       "route_epsilon_after": after["route_epsilon"],
                       "outcome": ("runs in full" if plan.allowed_steps == plan.planned_steps else
                                   "refused (exit 13)" if plan.allowed_steps == 0 else
                                   f"stops at step {plan.allowed_steps} (exit 13)")}}


def run_round(spec_path: str | Path, keyring: tgsp.Keyring, passphrase: Callable[[], str], *,
              stop: threading.Event | None = None, progress: Callable[[str, int, int, float], None] | None = None,
              now: clock.Clock = clock.utcnow, input_root: Path | None = None,
              output_root: Path | None = None) -> RoundResult:
    """Run one round. Relative input paths resolve against ``input_root``
    (default: the spec's folder); with ``output_root`` the package goes to
    ``output_root/<basename of output.path>`` and relative state_dirs there."""
    spec, base, out_base, digest = open_spec(spec_path, input_root, output_root)
    if spec.privacy.mode == "n2he":
        raise InputError("privacy.mode \"n2he\" is not available in this tgflow yet",
                         hint="use privacy.mode \"dp\" or \"off\"")
    dp_on = spec.privacy.mode == "dp"
    if dp_on:
        privacy.check_spec(spec)
    out_path = resolve(out_base, spec.output.path)
    prepare_parent(out_path)  # one rule for every command: create it, or exit 5
    ctx = Context(spec, base, digest, state_dir(spec, out_base), now)
    # Fail closed on an unreadable ledger before any work.
    ledger = Ledger.load(ctx.state, spec.route_key) if dp_on else None
    audit = privacy.AuditKey(ctx.state) if dp_on else None
    private = (lambda d: audit.digest(d)) if audit else (lambda d: d)  # noqa: E731
    started = now()
    # Fail fast on everything that needs no model: keys, recipients, output path.
    recipients = [keyring.resolve_public(r).key for r in spec.output.recipients]
    signer = keyring.signer(spec.output.signing_key, passphrase)
    device = model_mod.pick_device(spec.training.precision)
    model_path = model_mod.resolve_model(spec.base_model_ref, base)
    model_files = model_mod.model_digest(model_path)
    model_id = tgsp.canonical.sha256_hex(tgsp.canonical.encode(model_files))
    stage = _stage_reporter(progress)
    with stage("loading the base model"):
        tok, model = model_mod.load(model_path, device)
    chat = (lambda msgs: tok.apply_chat_template(msgs, tokenize=False)) if getattr(tok, "chat_template", None) else None
    load = lambda f: feeds_mod.load_feed(f, base, chat_template=chat, keyring=keyring)  # noqa: E731
    feed, reference = load(spec.feed), load(spec.reference)
    eval_feed = load(spec.eval) if spec.eval else None
    ctx.record("tgflow.round.start", {"route": spec.route_key, "spec_sha256": digest,
                                      "spec": spec.model_dump(mode="json"), "environment": environment(device)})
    ctx.record("tgflow.inputs", {
        "base_model": {"ref": spec.base_model_ref, "sha256": model_id, "files": model_files},
        "feed": {"source": feed.source, "sha256": private(feed.digest), "examples": len(feed.examples),
                 "tgsp_package": feed.package_id},
        "reference": {"source": reference.source, "sha256": reference.digest, "examples": len(reference.examples)},
        "eval": None if eval_feed is None else {"source": eval_feed.source, "sha256": eval_feed.digest,
                                                "examples": len(eval_feed.examples)}})

    # --- novelty ----------------------------------------------------------------
    max_len = spec.training.max_seq_len
    history = novelty.History(ctx.state / "novelty", model_id)
    # Under DP the history is neither consulted nor grown: a past record could
    # otherwise decide which later records are trained on, outside any round's ε.
    with stage("scoring novelty"):
        emb = None if dp_on else novelty.embed(model, tok, feed.examples, device.name, max_len)
        nov = novelty.score(feed.examples, emb, None if dp_on else history, spec.policy.novelty_threshold)
    summary = nov.summary(spec.policy.novelty_threshold, spec.policy.min_novel_examples)
    ctx.record("tgflow.novelty", summary)
    if summary["skipped"]:
        return _reject(ctx, NoveltySkipped, f"only {len(nov.novel)} novel examples (need {spec.policy.min_novel_examples} "
                       f"with novelty >= {spec.policy.novelty_threshold}); round skipped", {"novelty": summary})

    novel = [feed.examples[i] for i in nov.novel]
    if eval_feed is not None:
        train_ex, eval_ex = novel, eval_feed.examples
    else:  # hold out a deterministic slice (by content hash, so it is stable across rounds)
        ranked = sorted(novel, key=lambda e: e.digest)
        k = max(1, round(len(ranked) * spec.policy.eval_fraction)) if spec.policy.eval_fraction > 0 else 0
        held = set(ranked[:k])
        eval_ex, train_ex = ranked[:k], [e for e in novel if e not in held]
        if not eval_ex:
            raise InputError("no evaluation data: give an eval feed or policy.eval_fraction > 0")
    train_data, eval_data = tokenize(tok, train_ex, max_len), tokenize(tok, eval_ex, max_len)
    ref_data = tokenize(tok, reference.examples, max_len)
    train_digest = tgsp.canonical.sha256_hex(tgsp.canonical.encode([[e.prompt, e.target] for e in train_ex]))

    fingerprint = {"spec_sha256": digest, "train_sha256": train_digest, "model_sha256": model_id}
    steps = total_steps(spec.training, len(train_data))
    plan = None
    if dp_on:  # plan the mechanism (and check the budget) before any more work
        round_id = tgsp.canonical.sha256_hex(tgsp.canonical.encode(fingerprint))
        own = ledger.pending(round_id)
        spent = [ev for e in ledger.entries if e is not own for ev in ledger.events_of(e)]
        plan = privacy.plan(spec, len(train_data), spent)
        if plan.allowed_steps == 0:
            ctx.round_id = round_id
            return _budget_refused(ctx, ledger, plan)

    # --- base losses, then train ----------------------------------------------------
    with stage("evaluating the base model"):
        eval_before, ref_before = mean_loss(model, tok, eval_data, device.name), mean_loss(model, tok, ref_data, device.name)
    peft_model = add_lora(model, spec.lora, spec.training.seed)
    store = CheckpointStore(ctx.state / "checkpoint")
    dp_run = None
    if plan is not None:
        ctx.ledger, ctx.round_id = ledger, round_id
        ledger.begin(ctx.round_id, plan.event(plan.allowed_steps), {
            "started": clock.fmt(started), "planned_steps": plan.planned_steps, "delta": plan.delta,
            "accountant": plan.accountant, "max_grad_norm": plan.config.max_grad_norm,
            "expected_batch_size": plan.config.expected_batch, "spec_sha256": digest})
        dp_run = DPRun(plan.config, DPRandom(device.name))
    result = train(peft_model, tok, train_data, spec.training, device.name, store, fingerprint, stop=stop,
                   progress=(lambda d, t, loss, _tokens: progress("training", d, t, loss)) if progress else None,
                   dp=dp_run, limit=plan.allowed_steps if plan else None)
    training = {**result.metrics(), "train_examples": len(train_data), "train_sha256": private(train_digest),
                "lora": spec.lora.model_dump(mode="json"), "planned_steps": steps,
                "learning_rate": spec.training.learning_rate, "batch_size": spec.training.batch_size,
                "device": device.name, "dtype": device.dtype_name}
    if plan is None:
        ctx.record("tgflow.training", training)
        privacy_record = {"mode": "off", "note": "no differential privacy: the adapter may memorise training examples"}
    else:
        # Losses, token counts and timings come from the private records outside the mechanism.
        ctx.record("tgflow.training", {**{k: v for k, v in training.items() if k not in result.PRIVATE},
                                       "withheld_under_dp": list(result.PRIVATE)})
        privacy_record = plan.summary(result.steps, dp_run.random.source)
        ledger.settle(ctx.round_id, {"epsilon": privacy_record["epsilon"], "route_epsilon": privacy_record["route_epsilon"],
                                     "noise_multiplier": plan.config.noise_multiplier,
                                     "randomness": dp_run.random.source}, steps=result.steps)
    ctx.record("tgflow.privacy", privacy_record)
    if plan is not None and result.steps < plan.planned_steps:
        store.clear()
        return _reject(ctx, BudgetExhausted, f"privacy budget reached: stopped after {result.steps} of "
                       f"{plan.planned_steps} steps (route epsilon {privacy_record['route_epsilon']:.4g} of "
                       f"{plan.budget:g}); nothing packaged", {"training": result.metrics(private=True), "privacy": privacy_record})

    # --- evaluation gate and forgetting budget ------------------------------------------
    with stage("evaluating the adapter"):
        eval_after, ref_after = mean_loss(peft_model, tok, eval_data, device.name), mean_loss(peft_model, tok, ref_data, device.name)
    improvement = -relative_change(eval_before, eval_after)
    gate = spec.policy.gate
    reasons = []
    if gate.max_eval_loss is not None and eval_after > gate.max_eval_loss:
        reasons.append(f"eval loss {eval_after:.4f} > max_eval_loss {gate.max_eval_loss}")
    if gate.min_eval_improvement is not None and improvement < gate.min_eval_improvement:
        reasons.append(f"eval improvement {improvement:.4f} < min_eval_improvement {gate.min_eval_improvement}")
    evaluation = {"eval_examples": len(eval_data), "eval_loss_before": round(eval_before, 6),
                  "eval_loss_after": round(eval_after, 6), "eval_improvement": round(improvement, 6),
                  "gate": gate.model_dump(mode="json"), "passed": not reasons, "reasons": reasons}
    ctx.record("tgflow.evaluation", evaluation)
    forgetting = relative_change(ref_before, ref_after)
    forget = {"reference_examples": len(ref_data), "reference_loss_before": round(ref_before, 6),
              "reference_loss_after": round(ref_after, 6), "forgetting": round(forgetting, 6),
              "budget": spec.policy.forgetting_budget, "passed": forgetting <= spec.policy.forgetting_budget}
    ctx.record("tgflow.forgetting", forget)
    report = {"novelty": summary, "training": result.metrics(private=plan is not None), "evaluation": evaluation,
              "forgetting": forget,
              "privacy": privacy_record}
    if not forget["passed"]:
        store.clear()
        return _reject(ctx, ForgettingExceeded, f"forgetting {forgetting:.4f} exceeds the budget {spec.policy.forgetting_budget}",
                       report)
    if reasons:
        store.clear()
        return _reject(ctx, GateFailed, "evaluation gate failed: " + "; ".join(reasons), report)

    # --- package ------------------------------------------------------------------------
    version = _next_version(ctx) if spec.output.version == "auto" else spec.output.version
    with tempfile.TemporaryDirectory(prefix="tgflow-adapter-") as tmp:
        adapter_dir = Path(tmp) / "adapter"
        peft_model.save_pretrained(adapter_dir, safe_serialization=True)
        expires = now() + timedelta(days=spec.output.expires_in_days) if spec.output.expires_in_days else None
        ctx.record("tgflow.round.end", {"outcome": PACKAGED, "version": version,
                                        "started": clock.fmt(started), "finished": clock.fmt(now())})
        built = tgsp.build(
            adapter_dir, out_path, route=spec.route_key, version=version, kind="adapter", recipients=recipients,
            signers=[signer], events=ctx.events, expires=expires, now=now,
            external={"run_spec_sha256": digest, "route_key": spec.route_key},
            extra={"privacy": plan.manifest(privacy_record) if plan else {"mode": "off"}},
            dependencies=[{"uri": f"tgflow:base-model/{spec.base_model_ref}", "digest": {"sha256": model_id}},
                          {"uri": f"tgflow:feed/{feed.source}", "digest": _digest_map(private(feed.digest))},
                          {"uri": f"tgflow:reference/{reference.source}", "digest": {"sha256": reference.digest}}])
    # Only now does the route move on: history grows, version advances, checkpoint goes.
    # Every novel example this round consumed (trained on or held out) is now "seen".
    if not dp_on:  # DP records must not steer which records later rounds select
        history.append(novel, emb[nov.novel])
    write_bytes(ctx.state / "route.json", json.dumps({"route": spec.route_key, "last_version": version,
                                                      "package_id": built.package_id}).encode())
    store.clear()
    ctx.settle(PACKAGED)
    report.update({"outcome": PACKAGED, "package": str(out_path), "package_id": built.package_id, "version": version})
    _write_report(ctx, report)
    return RoundResult(PACKAGED, report, out_path, built.package_id)


def _stage_reporter(progress: Callable[[str, int, int, float], None] | None):
    """A context manager per long stage: progress(stage, 0, 1) on entry, (1, 1) on exit."""
    @contextlib.contextmanager
    def stage(name: str):
        if progress:
            progress(name, 0, 1, math.nan)
        yield
        if progress:
            progress(name, 1, 1, math.nan)
    return stage


def _next_version(ctx: Context) -> int:
    try:
        return int(json.loads((ctx.state / "route.json").read_text())["last_version"]) + 1
    except FileNotFoundError:
        return 1
    except (ValueError, KeyError, TypeError):
        raise InputError(f"route state {ctx.state / 'route.json'} is damaged",
                         hint="restore it, or set output.version explicitly") from None


def _write_report(ctx: Context, report: dict[str, Any]) -> Path:
    rounds = ctx.state / "rounds"
    rounds.mkdir(parents=True, exist_ok=True)
    stamp = clock.fmt(ctx.now()).replace(":", "")
    name = f"{stamp}-{report['outcome']}"
    write_bytes(rounds / f"{name}.evidence.jsonl", evidence.encode_jsonl(evidence.append([], ctx.events)))
    write_bytes(rounds / f"{name}.report.json", (json.dumps(report, indent=2, sort_keys=True) + "\n").encode())
    return rounds / f"{name}.report.json"


def _digest_map(d: str) -> dict[str, str]:
    algo, _, value = d.rpartition(":")
    return {algo or "sha256": value}


def _budget_refused(ctx: Context, ledger: Ledger, plan: privacy.DPPlan) -> NoReturn:
    record = {**plan.summary(0, "none"), "refused": True}
    spent = record["route_epsilon_before"]
    ctx.record("tgflow.privacy", record)
    message = (f"privacy budget exhausted: the route has spent epsilon {spent:.4g} of {plan.budget:g}, and not one "
               f"more step at noise_multiplier {plan.config.noise_multiplier:.4g} fits")
    ledger.refuse(ctx.round_id, {"outcome": BudgetExhausted.outcome, "started": clock.fmt(ctx.now()),
                                 "reason": message, "spec_sha256": ctx.digest})
    _reject(ctx, BudgetExhausted, message, {"privacy": record})


def _reject(ctx: Context, kind: type[RoundOutcome], message: str, report: dict[str, Any]) -> NoReturn:
    """Record the outcome, write evidence and report, and raise ``kind``."""
    ctx.settle(kind.outcome)
    ctx.record("tgflow.round.end", {"outcome": kind.outcome, "reason": message})
    report = {**report, "outcome": kind.outcome, "reason": message}
    report["report_path"] = str(_write_report(ctx, report))
    raise kind(message, report, hint=f"report: {report['report_path']}")
