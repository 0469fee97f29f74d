"""What a package says about itself, as readable lines (pure: data in, text out).

`tgsp inspect` prints these; `tgsp report` puts the same sentences in HTML.
Every value comes from the package and is untrusted: callers print it
through ``term`` (escaped), never as markup.
"""

from __future__ import annotations

from typing import Any, Callable


def _pct(x: Any) -> str:
    return f"{x * 100:.1f}%" if isinstance(x, (int, float)) else "?"


def _num(x: Any) -> str:
    return f"{x:.4g}" if isinstance(x, (int, float)) and not isinstance(x, bool) else str(x)


def novelty(d: dict) -> str:
    return (f"novelty: {d.get('examples')} examples scored, {d.get('novel')} novel at threshold "
            f"{_num(d.get('threshold'))}, {d.get('duplicates', 0)} duplicates, {d.get('near_duplicates', 0)} near-duplicates"
            + (" (round skipped)" if d.get("skipped") else ""))


def training(d: dict) -> str:
    head = f"training: {d.get('steps')} of {d.get('planned_steps', d.get('steps'))} steps"
    if d.get("resumed_from_step"):
        head += f", resumed from step {d['resumed_from_step']}"
    if "withheld_under_dp" in d:
        return head + "; loss, token counts and timings withheld under DP"
    if "withheld_from_update" in d:
        return head + "; loss, token counts and timings withheld from the update (the site's own report has them)"
    return head + f", loss {_num(d.get('loss_first'))} -> {_num(d.get('loss_last'))}, {d.get('tokens')} tokens"


def evaluation(d: dict) -> str:
    gate = {k: v for k, v in (d.get("gate") or {}).items() if v is not None}
    rule = ", ".join(f"{k} {_num(v)}" for k, v in gate.items()) or "no gate"
    verdict = "passed" if d.get("passed") else "FAILED: " + "; ".join(map(str, d.get("reasons") or []))
    return (f"evaluation: {d.get('eval_examples')} examples, eval loss {_num(d.get('eval_loss_before'))} -> "
            f"{_num(d.get('eval_loss_after'))} ({_pct(d.get('eval_improvement'))} better); gate {rule}: {verdict}")


def forgetting(d: dict) -> str:
    sign = "+" if isinstance(d.get("forgetting"), (int, float)) and d["forgetting"] >= 0 else ""
    return (f"forgetting: {sign}{_pct(d.get('forgetting'))} on {d.get('reference_examples')} reference examples "
            f"(budget {_pct(d.get('budget'))}): {'passed' if d.get('passed') else 'FAILED'}")


def privacy(d: dict) -> str:
    if d.get("mode") != "dp":
        return f"privacy: {d.get('mode', 'off')}" + (f" ({d['note']})" if d.get("note") else "")
    seeded = str(d.get("randomness", "")).startswith("test-seed")
    return (f"privacy: DP-SGD{' with a TEST SEED (NOT private)' if seeded else ''}, epsilon {_num(d.get('epsilon'))} "
            f"at delta {_num(d.get('delta'))} ({d.get('accountant')}), sigma {_num(d.get('noise_multiplier'))}, "
            f"q {_num(d.get('sample_rate'))}, {d.get('steps')} steps; route epsilon {_num(d.get('route_epsilon'))} "
            f"of {_num(d.get('route_budget_epsilon'))}")


def build(d: dict) -> str:
    return (f"built by {d.get('tool')}: {d.get('files')} files, {d.get('bytes')} bytes, "
            + (f"encrypted to {len(d.get('recipients') or [])} recipient(s)" if d.get("encrypted") else "not encrypted"))


def sign(d: dict) -> str:
    held = d.get("custody")
    where = (" (" + ", ".join(f"{a} in {c}" for a, c in sorted(held.items())) + ")") if isinstance(held, dict) else ""
    return f"signed by {d.get('name')} v{d.get('version')} {str(d.get('keyid'))[:16]}{where}"


def round_end(d: dict) -> str:
    return f"round {d.get('outcome')}" + (f", version {d['version']}" if d.get("version") is not None else "")


def round_start(d: dict) -> str:
    parent = d.get("parent") or {}
    return f"round started for route {d.get('route')}" + (
        f", from parent {parent.get('package_id')}" if parent.get("package_id") else "")


RENDER: dict[str, Callable[[dict], str]] = {
    "tgflow.round.start": round_start, "tgflow.novelty": novelty, "tgflow.training": training,
    "tgflow.evaluation": evaluation, "tgflow.forgetting": forgetting, "tgflow.privacy": privacy,
    "tgflow.round.end": round_end, "tgflow.build": build, "tgflow.sign": sign,
}


def event_line(record: dict[str, Any]) -> str:
    data = record.get("data")
    render = RENDER.get(record.get("type"))
    if render is not None and isinstance(data, dict):
        try:
            return render(data)
        except (TypeError, ValueError, AttributeError, KeyError):
            pass  # a foreign event of a known name: fall back to its keys
    if isinstance(data, dict):
        return f"{record.get('type')}: " + ", ".join(sorted(map(str, data))[:8])
    return f"{record.get('type')}"


def parent_of(evidence: list[dict[str, Any]]) -> str:
    """What the adapter was trained from: the route's production adapter it was warm-started
    from (``tgflow.inputs``), or the base model, with the production adapter it was held against."""
    inputs = [e["data"] for e in evidence if e.get("type") == "tgflow.inputs" and isinstance(e.get("data"), dict)]
    if inputs:
        parent = inputs[-1].get("parent")
        if not isinstance(parent, dict) or not parent.get("package_id"):
            return "none: trained from the base model"
        which = f"{parent['package_id']} (version {parent.get('version')}, {parent.get('alias', 'production')})"
        if parent.get("init") == "last-release":
            return f"warm-started from {which}"
        return f"none: trained from the base model; evaluated against {which}"
    for e in evidence:  # packages from before tgflow.inputs recorded the parent
        if e.get("type") == "tgflow.round.start" and isinstance(e.get("data"), dict):
            parent = e["data"].get("parent") or {}
            return parent.get("package_id") or "none: trained from the base model"
    return "none recorded (not made by peft run)"
