"""`tgflow tgsp report --route ROUTE`: one self-contained HTML page about a route's history.

What an MLflow UI shows, for machines that cannot run one: each registered version with its
task metrics over time, where the aliases point, every promotion and rollback, and ε spent
against the budget for a DP route. Pure: the verified route index and each version's facts
in, HTML out; values are escaped and clipped as in report.py, and the page has no script.
"""

from __future__ import annotations

from typing import Any

from .report import CSP, H, PAD, STYLE, W, _dict, _frame, _num, e

SERIES = (("exact_match", "exact match", "#0969da"), ("choice_accuracy", "choice accuracy", "#8250df"))
MAX_VERSIONS = 500  # rows and points on one page


def _x(i: int, n: int) -> float:
    return PAD + (i * (W - PAD - 16) / (n - 1) if n > 1 else (W - PAD - 16) / 2)


def _y(v: float, top: float) -> float:
    return H - PAD - v / top * (H - PAD - 8)


def metrics_chart(rows: list[dict]) -> str:
    """Exact match and choice accuracy of each version, in the order they were registered."""
    pts = {key: [(i, v) for i, r in enumerate(rows) if (v := _num(_dict(r.get("round")).get(key))) is not None]
           for key, _, _ in SERIES}
    if not any(pts.values()):
        return '<p class="dim">Task metrics over time: no version records them.</p>'
    body = ""
    for key, label, colour in SERIES:
        line = " ".join(f"{_x(i, len(rows)):.1f},{_y(v, 1.0):.1f}" for i, v in pts[key])
        body += f'<polyline fill="none" stroke="{colour}" stroke-width="2" points="{line}"/>'
        body += "".join(f'<circle cx="{_x(i, len(rows)):.1f}" cy="{_y(v, 1.0):.1f}" r="3" fill="{colour}"/>'
                        for i, v in pts[key])
    body += (f'<text x="{PAD - 4}" y="14" font-size="10" text-anchor="end">100%</text>'
             f'<text x="{PAD - 4}" y="{H - PAD}" font-size="10" text-anchor="end">0%</text>')
    body += "".join(f'<text x="{_x(i, len(rows)):.1f}" y="{H - PAD + 14}" font-size="10" text-anchor="middle">'
                    f'v{e(r.get("version"))}</text>' for i, r in enumerate(rows))
    return _frame("metrics-over-time", "task metrics of each version", body,
                  "Each version's task metrics on its round's eval set: exact match (blue), choice accuracy (purple).")


def epsilon_chart(rows: list[dict]) -> str:
    """The route's ε after each DP version, against the route budget."""
    pts = [(i, v) for i, r in enumerate(rows) if (v := _num(_dict(r.get("privacy")).get("route_epsilon"))) is not None]
    budgets = [b for r in rows if (b := _num(_dict(r.get("privacy")).get("route_budget_epsilon"))) is not None]
    if not pts:
        return '<p class="dim">Privacy budget: no version of this route was trained with differential privacy.</p>'
    budget = budgets[-1] if budgets else None
    top = max([v for _, v in pts] + ([budget] if budget else [])) * 1.15 or 1.0
    line = " ".join(f"{_x(i, len(rows)):.1f},{_y(v, top):.1f}" for i, v in pts)
    body = f'<polyline fill="none" stroke="#bf8700" stroke-width="2" points="{line}"/>'
    if budget is not None:
        y = _y(budget, top)
        body += (f'<line x1="{PAD}" y1="{y:.1f}" x2="{W - 8}" y2="{y:.1f}" stroke="#cf222e" stroke-dasharray="4 3"/>'
                 f'<text x="{W - 10}" y="{y - 4:.1f}" font-size="10" text-anchor="end" fill="#cf222e">'
                 f'budget {budget:g}</text>')
    body += f'<text x="{PAD - 4}" y="14" font-size="10" text-anchor="end">{top:.3g}</text>'
    return _frame("epsilon-over-time", "route epsilon after each version", body,
                  "Route ε spent after each packaged DP version (from its signed privacy record).")


def _pct(v: Any) -> str:
    x = _num(v)
    return "-" if x is None else f"{x:.0%}"


def _version_rows(rows: list[dict], aliases: dict[str, list[str]]) -> str:
    out = ""
    for r in rows:
        rnd, pv = _dict(r.get("round")), _dict(r.get("privacy"))
        eps = _num(pv.get("epsilon"))
        status = '<span class=ok>verified</span>' if r.get("verified") else f'<span class=bad>{e(r.get("why"))}</span>'
        out += (f"<tr><td>v{e(r.get('version'))}</td><td><code>{e(str(r.get('package_id'))[7:23])}</code></td>"
                f"<td class=when><code>{e(r.get('registered'))}</code></td>"
                f"<td>{e(', '.join(aliases.get(str(r.get('package_id')), [])))}</td>"
                f"<td>{_pct(rnd.get('exact_match'))}</td><td>{_pct(rnd.get('choice_accuracy'))}</td>"
                f"<td>{e(rnd.get('eval_loss_after', '-'))}</td><td>{'-' if eps is None else f'{eps:.3g}'}</td>"
                f"<td>{status}</td></tr>")
    return out


def render(doc: dict[str, Any], rows: list[dict]) -> str:
    """``doc``: the verified route index; ``rows``: per registered version, its index entry's facts plus
    ``round`` (its evaluation summary), ``privacy`` (its manifest's record) and ``verified``/``why``."""
    rows = rows[:MAX_VERSIONS]
    aliases: dict[str, list[str]] = {}
    for name, target in sorted(_dict(doc.get("aliases")).items()):
        aliases.setdefault(str(_dict(target).get("package_id")), []).append(name)
    history = "".join(f"<tr><td>v{e(h.get('index_version'))}</td><td class=when><code>{e(h.get('at'))}</code></td>"
                      f"<td>{e(h.get('action'))}</td><td>{e(h.get('alias') or '-')}</td>"
                      f"<td>v{e(h.get('version'))}</td><td>{e(h.get('by'))}</td></tr>"
                      for h in doc.get("history", [])[-MAX_VERSIONS:] if isinstance(h, dict))
    route = e(doc.get("route"))
    moves = ", ".join(f"{e(a)} → v{e(_dict(t).get('version'))}" for a, t in sorted(_dict(doc.get("aliases")).items()))
    return (f'<!doctype html><html lang="en"><head><meta charset="utf-8">'
            f'<meta http-equiv="Content-Security-Policy" content="{CSP}">'
            f"<title>tgflow route report: {route}</title><style>{STYLE}</style></head><body>"
            f"<h1>route {route}</h1><p><span class=ok>VERIFIED</span> index v{e(doc.get('version'))}, issued "
            f"{e(doc.get('issued'))}, expires {e(doc.get('expires'))}; {moves or 'no aliases'}</p>"
            f"<h2>Versions</h2><div class=grid>{metrics_chart(rows)}{epsilon_chart(rows)}</div>"
            f"<table><tr><th>version</th><th>package</th><th>registered</th><th>aliases</th><th>exact match</th>"
            f"<th>choice acc.</th><th>eval loss</th><th>ε</th><th>package</th></tr>{_version_rows(rows, aliases)}</table>"
            f"<h2>Promotions, rollbacks and evaluations</h2><table><tr><th>index</th><th>when</th><th>action</th>"
            f"<th>alias</th><th>version</th><th>by</th></tr>{history}</table>"
            f"<p class=dim>Check it yourself: <code>tgflow route show {route} --registry DIR</code>.</p>"
            f"</body></html>\n")
