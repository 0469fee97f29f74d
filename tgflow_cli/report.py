"""`tgflow tgsp report`: one self-contained HTML page about a package.

Pure: package facts in, HTML text out. No script, no network, no CDN: the
plots are inline SVG and a Content-Security-Policy forbids everything else.
Every value from the package is escaped (``html.escape``) and clipped; nothing from the
package is ever markup. Values of the wrong type or size make a section say it is
unreadable, never break the page, and the page has a bounded size (a long evidence log
shows its first MAX_EVENTS events).
"""

from __future__ import annotations

import html
import math
from typing import Any

from runners.learn.intervals import wilson

from . import timeline
from .term import clean

CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src data:"
STYLE = """
body{font:14px/1.45 system-ui,sans-serif;margin:2em auto;max-width:980px;color:#1b1f24;padding:0 1em}
h1{font-size:20px;margin-bottom:.2em}h2{font-size:16px;margin-top:1.6em;border-bottom:1px solid #d0d7de}
.ok{color:#1a7f37;font-weight:600}.bad{color:#cf222e;font-weight:600}.dim{color:#57606a}
table{border-collapse:collapse}td,th{padding:2px 10px 2px 0;text-align:left;vertical-align:top}
code{font:12px ui-monospace,monospace}.grid{display:flex;flex-wrap:wrap;gap:24px}
figure{margin:0;max-width:100%}figcaption{color:#57606a;font-size:12px}
svg{max-width:100%;height:auto}td.when code{white-space:nowrap}
.head td,.head th{padding:4px 18px 4px 0}.big{font-size:18px;font-weight:600}
"""
W, H, PAD = 440, 200, 36
MAX_TEXT = 300  # characters of one value
MAX_EVENTS = 2000  # rows of the evidence timeline
MAX_POINTS = 4096  # points of a plot
ROUND_EVENTS = ("tgflow.training", "tgflow.evaluation", "tgflow.forgetting", "tgflow.novelty")


def e(value: Any) -> str:
    """``value`` as inert HTML text: control and bidi characters as visible escapes (a page written
    to a terminal with -o - must not paint it), markup escaped, long values clipped."""
    text = clean(value)
    if len(text) > MAX_TEXT:
        text = f"{text[:MAX_TEXT]}… ({len(text) - MAX_TEXT} more characters)"
    return html.escape(text, quote=True)


def _dict(v: Any) -> dict:
    return v if isinstance(v, dict) else {}


def _list(v: Any) -> list:
    return v[:MAX_POINTS] if isinstance(v, list) else []


def _num(v: Any) -> float | None:
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) else None


def _frame(svg_id: str, title: str, body: str, caption: str) -> str:
    return (f'<figure><svg id="{svg_id}" role="img" aria-label="{e(title)}" width="{W}" height="{H}" '
            f'viewBox="0 0 {W} {H}" xmlns="http://www.w3.org/2000/svg">'
            f'<rect x="0" y="0" width="{W}" height="{H}" fill="#f6f8fa"/>'
            f'<line x1="{PAD}" y1="{H - PAD}" x2="{W - 8}" y2="{H - PAD}" stroke="#57606a"/>'
            f'<line x1="{PAD}" y1="8" x2="{PAD}" y2="{H - PAD}" stroke="#57606a"/>{body}</svg>'
            f"<figcaption>{e(caption)}</figcaption></figure>")


def loss_curve(training: dict) -> str:
    curve = _dict(training.get("loss_curve"))
    ys = [y for y in (_num(v) for v in _list(curve.get("losses"))) if y is not None]
    if "withheld_under_dp" in training:
        return '<p class="dim">Training loss curve: withheld under differential privacy.</p>'
    if "withheld_from_update" in training:
        return '<p class="dim">Training loss curve: withheld from a federated update (the site keeps it).</p>'
    if len(ys) < 2:
        return '<p class="dim">Training loss curve: not recorded in this package.</p>'
    stride = curve.get("stride", 1)
    if not isinstance(stride, int) or isinstance(stride, bool) or not 1 <= stride <= 1 << 30:
        return '<p class="dim">Training loss curve: unreadable in this package (its stride is not a step count).</p>'
    lo, hi = min(ys), max(ys)
    span = (hi - lo) or 1.0
    pts = " ".join(f"{PAD + i * (W - PAD - 8) / (len(ys) - 1):.1f},{8 + (hi - y) / span * (H - PAD - 8):.1f}"
                   for i, y in enumerate(ys))
    body = (f'<polyline fill="none" stroke="#0969da" stroke-width="2" points="{pts}"/>'
            f'<text x="4" y="16" font-size="10">{hi:.3g}</text><text x="4" y="{H - PAD}" font-size="10">{lo:.3g}</text>'
            f'<text x="{W - 8}" y="{H - 12}" font-size="10" text-anchor="end">step {len(ys) * stride}</text>')
    return _frame("loss-curve", "training loss per step", body, f"Training loss, every {stride} step(s).")


def _bars(svg_id: str, title: str, bars: list[tuple[str, float | None, str]], limit: tuple[str, float] | None,
          caption: str, unit: str = "") -> str:
    values = [v for _, v, _ in bars if v is not None] + ([limit[1]] if limit else [])
    top = max(values or [1.0]) * 1.15 or 1.0
    slot = (W - PAD - 8) / max(1, len(bars))
    body = ""
    for i, (label, v, colour) in enumerate(bars):
        x = PAD + i * slot + slot * 0.2
        if v is not None:
            h = v / top * (H - PAD - 8)
            body += (f'<rect x="{x:.1f}" y="{H - PAD - h:.1f}" width="{slot * 0.6:.1f}" height="{h:.1f}" fill="{colour}"/>'
                     f'<text x="{x + slot * 0.3:.1f}" y="{H - PAD - h - 4:.1f}" font-size="10" text-anchor="middle">{v:.4g}{unit}</text>')
        body += f'<text x="{x + slot * 0.3:.1f}" y="{H - PAD + 14}" font-size="10" text-anchor="middle">{e(label)}</text>'
    if limit:
        y = H - PAD - limit[1] / top * (H - PAD - 8)
        body += (f'<line x1="{PAD}" y1="{y:.1f}" x2="{W - 8}" y2="{y:.1f}" stroke="#cf222e" stroke-dasharray="4 3"/>'
                 f'<text x="{W - 10}" y="{y - 4:.1f}" font-size="10" text-anchor="end" fill="#cf222e">{e(limit[0])}</text>')
    return _frame(svg_id, title, body, caption)


def evaluation(ev: dict) -> str:
    before, after = _num(ev.get("eval_loss_before")), _num(ev.get("eval_loss_after"))
    gate = _dict(ev.get("gate"))
    limit = None
    if _num(gate.get("max_eval_loss")) is not None:
        limit = ("max eval loss", float(gate["max_eval_loss"]))
    elif _num(gate.get("min_eval_improvement")) is not None and before is not None:
        limit = (f"needed (-{gate['min_eval_improvement'] * 100:.0f}%)", before * (1 - gate["min_eval_improvement"]))
    return _bars("evaluation", "eval loss before and after", [("base", before, "#8c959f"), ("adapter", after, "#0969da")],
                 limit, timeline.evaluation(ev))


def forgetting(fg: dict) -> str:
    """In percent, as the timeline says it: one unit on the page."""
    value, budget = _num(fg.get("forgetting")), _num(fg.get("budget"))
    pct = (lambda v: None if v is None else v * 100)  # noqa: E731
    return _bars("forgetting", "forgetting against its budget, percent",
                 [("forgetting", max(0.0, pct(value)) if value is not None else None, "#bf8700")],
                 (f"budget {pct(budget):g}%", pct(budget)) if budget is not None else None, timeline.forgetting(fg),
                 unit="%")


def novelty(nv: dict) -> str:
    counts = [c for c in _list(_dict(nv.get("histogram")).get("counts")) if isinstance(c, int) and not isinstance(c, bool)]
    if not counts:
        return '<p class="dim">Novelty score histogram: not recorded in this package.</p>'
    top = max(max(counts), 1)
    slot = (W - PAD - 8) / len(counts)
    body = "".join(f'<rect x="{PAD + i * slot:.1f}" y="{H - PAD - c / top * (H - PAD - 8):.1f}" width="{slot - 1:.1f}" '
                   f'height="{c / top * (H - PAD - 8):.1f}" fill="#8250df"/>' for i, c in enumerate(counts))
    t = _num(nv.get("threshold"))
    if t is not None:
        x = PAD + t * (W - PAD - 8)
        body += (f'<line x1="{x:.1f}" y1="8" x2="{x:.1f}" y2="{H - PAD}" stroke="#cf222e" stroke-dasharray="4 3"/>'
                 f'<text x="{x + 3:.1f}" y="18" font-size="10" fill="#cf222e">threshold {t:g}</text>')
    body += (f'<text x="{PAD}" y="{H - PAD + 14}" font-size="10">0</text>'
             f'<text x="{W - 8}" y="{H - PAD + 14}" font-size="10" text-anchor="end">1</text>'
             f'<text x="{PAD - 4}" y="14" font-size="10" text-anchor="end">{top}</text>'
             f'<text x="{PAD - 4}" y="{H - PAD}" font-size="10" text-anchor="end">0</text>'
             f'<text x="10" y="{(H - PAD) / 2:.0f}" font-size="10" transform="rotate(-90 10 {(H - PAD) / 2:.0f})" '
             f'text-anchor="middle">examples</text>'
             f'<text x="{(W + PAD) / 2:.0f}" y="{H - 6}" font-size="10" text-anchor="middle">novelty score</text>')
    return _frame("novelty-histogram", "novelty scores: examples per score", body, timeline.novelty(nv))


def _share(m: dict, key: str) -> str:
    p, n = _num(m.get(key)), m.get("examples")
    if p is None or not 0 <= p <= 1:
        return '<span class=dim>-</span>'
    if not isinstance(n, int) or isinstance(n, bool) or n <= 0:
        return f"<span class=big>{p:.0%}</span>"
    lo, hi = wilson(p, n)
    return f'<span class=big>{p:.0%}</span> <span class=dim>({lo:.0%}–{hi:.0%})</span>'


def headline(ev: dict) -> str:
    """What a user came for: exact match and choice accuracy, base -> adapter, and against production
    (from round 2 on), each with its 95% interval on the eval set."""
    base, after, prod = _dict(ev.get("base")), _dict(ev.get("candidate")), _dict(ev.get("previous_release"))
    if not after:
        return ""
    cols = [("base model", base)] + ([("production", prod)] if prod else []) + [("this adapter", after)]
    head = "".join(f"<th>{e(name)}</th>" for name, _ in cols)
    rows = "".join(f"<tr><th>{label}</th>" + "".join(f"<td>{_share(m, key)}</td>" for _, m in cols) + "</tr>"
                   for key, label in (("exact_match", "exact match"), ("choice_accuracy", "choice accuracy")))
    n = after.get("examples")
    return (f'<table class=head><tr><th></th>{head}</tr>{rows}</table>'
            f'<p class=dim>On {e(n)} eval examples; in brackets, the 95% Wilson interval.</p>')


SECTIONS = (("tgflow.training", "Training loss curve", loss_curve), ("tgflow.evaluation", "Evaluation", evaluation),
            ("tgflow.forgetting", "Forgetting", forgetting), ("tgflow.novelty", "Novelty score histogram", novelty))


def _plots(evidence: list[dict]) -> str:
    """Each plot the package has data for; a package without a round says so, once."""
    if not any(r.get("type") in ROUND_EVENTS for r in evidence):
        return ('<p class="dim">This package records no training round (it was not made by peft run or fed '
                'aggregate): the loss curve, evaluation, forgetting and novelty do not apply.</p>')
    out = []
    for kind, title, plot in SECTIONS:
        data = _latest(evidence, kind)
        if not data:
            out.append(f'<p class="dim">{title}: not recorded in this package.</p>')
            continue
        try:
            out.append(plot(data))
        except (TypeError, ValueError, AttributeError, KeyError, OverflowError):
            out.append(f'<p class="dim">{title}: unreadable in this package.</p>')
    return "".join(out)


def _latest(evidence: list[dict], kind: str) -> dict:
    found = [r.get("data") for r in evidence if r.get("type") == kind and isinstance(r.get("data"), dict)]
    return found[-1] if found else {}


def _rows(pairs: list[tuple[str, str]]) -> str:
    return "<table>" + "".join(f"<tr><th>{e(k)}</th><td>{v}</td></tr>" for k, v in pairs) + "</table>"


def render(info: dict[str, Any], verdict: tuple[bool, str]) -> str:
    m, ev = info["manifest"], info["evidence"]
    ok, why = verdict
    custody = m.get("custody") or {}
    signers = "".join(
        f"<li>{e(s['name'])} v{e(s['version'])} <code>{e(s['keyid'][:16])}</code> signed {e(s['signed_at'])} "
        f"<span class=dim>({e(', '.join(f'{a} in {c}' for a, c in sorted((custody.get(s['keyid']) or {}).items())) or 'custody not recorded')})</span></li>"
        for s in m["signers"]) or "<li class=bad>unsigned</li>"
    events = "".join(f"<tr><td><code>{e(r.get('seq'))}</code></td><td class=when><code>{e(r.get('time'))}</code></td>"
                     f"<td>{e(timeline.event_line(r))}</td></tr>" for r in ev[:MAX_EVENTS])
    if len(ev) > MAX_EVENTS:
        events += f'<tr><td></td><td></td><td class="dim">… and {len(ev) - MAX_EVENTS} more events</td></tr>'

    privacy = m.get("privacy") if isinstance(m.get("privacy"), dict) else _latest(ev, "tgflow.privacy")
    plots = _plots(ev)
    try:
        top = headline(_latest(ev, "tgflow.evaluation"))
    except (TypeError, ValueError, AttributeError, OverflowError):
        top = '<p class="dim">Task metrics: unreadable in this package.</p>'
    facts = _rows([("package id", f"<code>{e(info['package_id'])}</code>"), ("route", e(m["route"])),
                   ("version", e(m["version"])), ("kind", e(m["kind"])), ("created", e(m["created"])),
                   ("expires", e(m.get("expires", "never"))), ("recipients", e(len(info["recipients"]))),
                   ("parent adapter", e(timeline.parent_of(ev))),
                   ("privacy", e(timeline.privacy(privacy).removeprefix("privacy: ") if privacy else "not recorded"))])
    status = f'<span class="{"ok" if ok else "bad"}">{"VERIFIED" if ok else "NOT VERIFIED"}</span> {e(why)}'
    return (f'<!doctype html><html lang="en"><head><meta charset="utf-8">'
            f'<meta http-equiv="Content-Security-Policy" content="{CSP}">'
            f"<title>tgflow report: {e(m['route'])} v{e(m['version'])}</title><style>{STYLE}</style></head><body>"
            f"<h1>{e(m['route'])} version {e(m['version'])}</h1><p>{status}</p>{top}{facts}"
            f"<h2>Signers</h2><ul>{signers}</ul><h2>Round</h2><div class=grid>{plots}</div>"
            f"<h2>Evidence timeline</h2><table>{events}</table>"
            f'<p class=dim>Made by {e(_tool(ev))}. Check it yourself: <code>tgflow tgsp verify PKG</code>.</p>'
            f"</body></html>\n")


def _tool(evidence: list[dict]) -> str:
    return str(_latest(evidence, "tgflow.build").get("tool", "tgflow"))
