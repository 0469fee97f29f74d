"""The model card inside every adapter package, made from the round's evidence.

Plain Markdown whose every value comes from the evidence; values are put in
code spans with backticks removed, so no data can add markup or links.
"""

from __future__ import annotations

from typing import Any


def _v(value: Any) -> str:
    text = str(value).replace("`", "'").replace("\n", " ").replace("\r", " ")
    return f"`{text[:200]}`"


def _metrics(ev: dict[str, Any]) -> list[str]:
    rows = []
    for key, label in (("exact_match", "exact match"), ("choice_accuracy", "choice accuracy"), ("loss", "loss")):
        before, after = (ev.get("base") or {}).get(key), (ev.get("candidate") or {}).get(key)
        parent = (ev.get("previous_release") or {}).get(key)
        if after is not None:
            rows.append(f"| {label} | {_v(before)} | {_v(parent)} | {_v(after)} |")
    return rows


def model_card(route: str, version: int, events: dict[str, Any]) -> str:
    inputs, ev = events.get("tgflow.inputs", {}), events.get("tgflow.evaluation", {})
    forget, privacy = events.get("tgflow.forgetting", {}), events.get("tgflow.privacy", {})
    base = inputs.get("base_model", {})
    parent = inputs.get("parent") or {}
    lines = [f"# LoRA adapter for route {_v(route)}, version {_v(version)}", "",
             "Made by tgflow from the evidence chain of the round that trained it; the evidence inside the "
             "package is the signed record, this card is a summary of it.", "",
             "## Lineage", "",
             f"- base model: {_v(base.get('ref'))}, sha256 {_v(base.get('sha256'))}",
             f"- parent: {_v(parent.get('package_id') or 'none (trained from the base model)')}"
             + (f", version {_v(parent.get('version'))}" if parent else ""),
             f"- feed: {_v((inputs.get('feed') or {}).get('sha256'))} ({_v((inputs.get('feed') or {}).get('examples'))} examples)",
             f"- eval set: {_v((inputs.get('eval') or {}).get('sha256'))}", "",
             "## Evaluation", "", "| metric | base model | previous release | this adapter |", "|---|---|---|---|",
             *_metrics(ev), "",
             f"Gate passed: {_v(ev.get('passed'))}. Forgetting against the previous release: "
             f"{_v(forget.get('forgetting'))} (budget {_v(forget.get('budget'))}); against the base model: "
             f"{_v(forget.get('forgetting_vs_base'))}.", "",
             "## Privacy", "", f"- mode: {_v(privacy.get('mode'))}"]
    if privacy.get("mode") == "dp":
        lines += [f"- epsilon {_v(privacy.get('epsilon'))} at delta {_v(privacy.get('delta'))} for this round; "
                  f"route epsilon {_v(privacy.get('route_epsilon'))}"]
    else:
        lines += [f"- {_v(privacy.get('note', ''))}"]
    lines += ["", "## Verify", "", "```", "tgflow tgsp verify PACKAGE", "tgflow tgsp inspect PACKAGE --timeline", "```", ""]
    return "\n".join(lines)
