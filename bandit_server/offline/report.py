"""Reports of offline evaluations: one self-contained HTML page (inline SVG, no scripts, no
external assets) for people, and a JSON document with every number for machines."""

from __future__ import annotations

import json
import math
import platform
from dataclasses import asdict
from datetime import UTC, datetime
from html import escape
from pathlib import Path
from typing import Any

import numpy as np

from bandit_server.learners.vw import versions as vw_versions
from bandit_server.offline.evaluation import Evaluation, PolicyEstimate
from bandit_server.offline.importance import ImportanceResult
from bandit_server.offline.search import SearchResult
from bandit_server.offline.svg import (
    axis_svg,
    color,
    downsample,
    fmt,
    interval_bar,
    line_chart,
    nice_ticks,
    padded_range,
)

CURVE_POINTS = 400
JSON_CURVE_POINTS = 1000

_CSS = """
body{font-family:system-ui,sans-serif;margin:24px 32px;color:#222;max-width:1400px}
h1{font-size:22px;margin:0 0 4px}h2{font-size:17px;margin:28px 0 8px;border-bottom:1px solid #ddd}
table{border-collapse:collapse;font-size:13px}td,th{padding:3px 8px;border-bottom:1px solid #eee;
text-align:right;vertical-align:middle;white-space:nowrap}th{background:#f6f6f6;white-space:normal}
td.name,th.name{text-align:left;min-width:220px;max-width:360px;white-space:normal;
overflow-wrap:anywhere}td.name code{background:none;padding:0}.muted{color:#666}
.box{padding:10px 14px;border-radius:6px;margin:10px 0}
.go{background:#e8f5e9;border:1px solid #a5d6a7}.stay{background:#fff8e1;border:1px solid #ffe082}
ul{margin:4px 0;padding-left:20px}li{margin:2px 0}
code{background:#f3f3f3;padding:1px 4px;border-radius:3px}.sw{display:inline-block;width:10px;
height:10px;border-radius:2px;margin-right:6px}
"""


def _clean(value: Any) -> Any:
    """JSON-safe: NaN and infinities become null, numpy scalars plain numbers."""
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def report_json(
    evaluation: Evaluation | None = None,
    *,
    search: SearchResult | None = None,
    importance: ImportanceResult | None = None,
) -> dict[str, Any]:
    """Every number, the settings and the versions, JSON-ready (NaN as null)."""
    out: dict[str, Any] = {
        "created": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "versions": {"python": platform.python_version(), "numpy": np.__version__, **vw_versions()},
    }
    if search is not None:
        evaluation = search.evaluation
        out["search"] = search.to_dict()
    if evaluation is not None:
        curves = {}
        for name, curve in evaluation.curves.items():
            x, y = downsample(curve, JSON_CURVE_POINTS)
            curves[name] = {"events": x.astype(int).tolist(), "value": y.tolist()}
        out["evaluation"] = {
            "source": evaluation.source,
            "n_events": evaluation.n_events,
            "n_skipped": evaluation.n_skipped,
            "n_estimated": evaluation.n_estimated,
            "reward_range": list(evaluation.reward_range),
            "reference": evaluation.reference,
            "settings": evaluation.settings.to_dict(),
            "rows": [asdict(row) for row in evaluation.rows],
            "estimator_details": evaluation.estimator_details,
            "curves": curves,
            "warnings": list(evaluation.warnings),
        }
    if importance is not None:
        out["importance"] = importance.to_dict()
    return dict(_clean(out))


def write_json(path: Path, document: dict[str, Any]) -> None:
    _write(path, json.dumps(document, indent=1, allow_nan=False) + "\n")


def write_html(path: Path, page: str) -> None:
    _write(path, page)


def _write(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)


def render_html(
    evaluation: Evaluation | None = None,
    *,
    search: SearchResult | None = None,
    importance: ImportanceResult | None = None,
    title: str = "Offline evaluation",
) -> str:
    """The report page: recommendation, estimates with interval bars, value curves, other
    estimators, feature importance, warnings, settings."""
    if search is not None:
        evaluation = search.evaluation
    body: list[str] = [f"<h1>{escape(title)}</h1>"]
    if evaluation is not None:
        body.append(_summary(evaluation))
    if search is not None:
        body.append(_recommendation(search))
    if evaluation is not None:
        body += [_estimates(evaluation, search), _curves(evaluation), _others(evaluation)]
    if importance is not None:
        body.append(_importance(importance))
    body.append(_warnings(evaluation, search, importance))
    body.append(_settings(evaluation, search, importance))
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        f"<title>{escape(title)}</title><style>{_CSS}</style></head><body>"
        + "\n".join(body)
        + "</body></html>\n"
    )


def _summary(ev: Evaluation) -> str:
    low, high = ev.reward_range
    return (
        f'<p class="muted">Log <code>{escape(ev.source)}</code>: {ev.n_events} events, '
        f"{ev.n_estimated} with a reward used in estimates, {ev.n_skipped} never learned "
        f"(<code>_skipLearn</code>, replayed only). Reward range [{fmt(low)}, {fmt(high)}]. "
        f"Primary estimator <b>{escape(ev.settings.primary)}</b>, {escape(ev.settings.interval)} "
        f"intervals at {1 - ev.settings.alpha:.0%}; differences are paired with the logged "
        f"policy ({escape(ev.settings.difference_interval)}).</p>"
    )


def _recommendation(search: SearchResult) -> str:
    rec = search.recommendation
    if rec.args is None:
        text = (
            "<b>Keep the current policy.</b> No candidate's paired difference to the logged "
            "policy has a lower bound above 0 at the corrected level."
        )
        cls = "stay"
    else:
        text = (
            f"<b>Recommended:</b> <code>{escape(rec.args)}</code><br>estimated "
            f"{fmt(rec.estimate)}, {fmt(rec.difference, 3)} above the logged policy (lower "
            f"bound {fmt(rec.difference_lower, 3)} at the corrected level). The winner of a "
            "search is optimistic: expect a gain nearer the lower bound."
        )
        cls = "go"
    return (
        f'<div class="box {cls}">{text}<br><span class="muted">Rule: {escape(rec.rule)}.'
        "</span></div>"
    )


def _estimates(ev: Evaluation, search: SearchResult | None) -> str:
    rows = sorted(ev.table(), key=lambda r: -r.value if math.isfinite(r.value) else math.inf)
    reference = ev.row(ev.reference)
    v_low, v_high = padded_range([b for r in rows for b in (r.lower, r.upper)])
    d_low, d_high = padded_range(
        [0.0, *(b for r in rows for b in (r.difference_lower, r.difference_upper))]
    )
    names = ev.names()
    head = (
        '<tr><th class="name">policy</th><th>estimate</th><th>interval</th><th>'
        f"{axis_svg(nice_ticks(v_low, v_high, 4), v_low, v_high)}</th><th>difference to logged"
        f"</th><th>{axis_svg(nice_ticks(d_low, d_high, 4), d_low, d_high)}</th>"
        + ("<th>lower bound, corrected</th>" if search else "")
        + "<th>ESS</th><th>mean weight</th><th>max weight</th></tr>"
    )
    lines = [head]
    for row in rows:
        swatch = color(names.index(row.policy))
        value_bar = interval_bar(
            row.value, row.lower, row.upper, (v_low, v_high), reference=reference.value, fill=swatch
        )
        difference_bar = interval_bar(
            row.difference,
            row.difference_lower,
            row.difference_upper,
            (d_low, d_high),
            reference=0.0,
            fill=swatch,
        )
        adjusted = ""
        if search is not None:
            bound = search.adjusted_lower.get(row.policy, math.nan)
            adjusted = f"<td>{fmt(bound, 3)}</td>"
        lines.append(
            f'<tr><td class="name"><span class="sw" style="background:{swatch}"></span>'
            f"{_policy_label(row.policy)}</td><td><b>{fmt(row.value)}</b></td>"
            f"<td>[{fmt(row.lower)}, {fmt(row.upper)}]</td>"
            f"<td>{value_bar}</td><td>{_difference_text(row)}</td><td>{difference_bar}</td>"
            f"{adjusted}<td>{row.ess:,.0f} ({row.ess_share:.0%})</td>"
            f"<td>{fmt(row.mean_weight, 3)}</td><td>{fmt(row.max_weight, 3)}</td></tr>"
        )
    return (
        f"<h2>Estimated reward ({escape(ev.settings.primary)})</h2><p class='muted'>Dashed "
        "lines: the logged policy's estimate (left) and no difference (right).</p><table>"
        + "".join(lines)
        + "</table>"
    )


def short_name(policy: str) -> str:
    """A policy's name without the `--cb_explore_adf` every VW candidate shares."""
    return policy.removeprefix("--cb_explore_adf ").strip()


def _policy_label(policy: str) -> str:
    if policy.startswith("--"):
        return f"<code>{escape(short_name(policy))}</code>"
    return escape(policy)


def _difference_text(row: PolicyEstimate) -> str:
    if not math.isfinite(row.difference):
        return "–"
    return f"{row.difference:+.4g} [{fmt(row.difference_lower, 3)}, {fmt(row.difference_upper, 3)}]"


def _curves(ev: Evaluation) -> str:
    n = ev.n_estimated
    start = min(max(n // 50, 1), max(n - 1, 0))  # the first events are noise, not signal
    series = []
    for name in ev.names():
        x, y = downsample(ev.curves[name], CURVE_POINTS, start)
        series.append((short_name(name), x, y))
    chart = line_chart(
        series,
        x_label="events with a reward, in log order",
        y_label=f"cumulative {ev.settings.primary} estimate",
    )
    return (
        f"<h2>Cumulative estimated reward</h2><p class='muted'>The estimate over the first t "
        f"events, from t = {start + 1}: learning policies improve along the log; fixed ones "
        f"settle.</p>{chart}"
    )


def _others(ev: Evaluation) -> str:
    estimators = ev.settings.estimators
    if len(estimators) < 2:
        return ""
    head = '<tr><th class="name">policy</th>' + "".join(
        f"<th>{escape(name)}</th>" for name in estimators
    )
    lines = [head + "</tr>"]
    for name in ev.names():
        cells = []
        for estimator in estimators:
            row = ev.row(name, estimator)
            cells.append(
                f"<td>{fmt(row.value)} <span class='muted'>[{fmt(row.lower)}, "
                f"{fmt(row.upper)}]</span></td>"
            )
        lines.append(f'<tr><td class="name">{_policy_label(name)}</td>{"".join(cells)}</tr>')
    return "<h2>All estimators</h2><table>" + "".join(lines) + "</table>"


def _importance(result: ImportanceResult) -> str:
    low, high = padded_range(
        [0.0, *(b for r in result.rows for b in (r.importance_lower, r.importance_upper))]
    )
    lines = [
        '<tr><th class="name">namespace</th><th>scope</th><th>VW index</th><th>value without</th>'
        f"<th>importance</th><th>{axis_svg(nice_ticks(low, high, 4), low, high)}</th></tr>"
    ]
    for row in result.rows:
        name = "(default)" if row.namespace == " " else row.namespace
        bar = interval_bar(
            row.importance, row.importance_lower, row.importance_upper, (low, high), reference=0.0
        )
        lines.append(
            f'<tr><td class="name">{escape(name)}</td><td>{row.scope}</td>'
            f"<td><code>{escape(row.letter)}</code></td><td>{fmt(row.value)}</td>"
            f"<td>{row.importance:+.4g} [{fmt(row.importance_lower, 3)}, "
            f"{fmt(row.importance_upper, 3)}]</td><td>{bar}</td></tr>"
        )
    return (
        f"<h2>Feature importance</h2><p class='muted'>Policy <code>{escape(result.policy)}</code>"
        f" estimated {fmt(result.full_value)} ({escape(result.estimator)}) with every namespace. "
        "Importance = value with the namespace minus value without it (paired over the same "
        "events); positive means it helps.</p><table>" + "".join(lines) + "</table>"
    )


def _warnings(
    ev: Evaluation | None, search: SearchResult | None, importance: ImportanceResult | None
) -> str:
    items = list(ev.warnings) if ev else []
    if search is not None:
        items += list(search.notes) + [f"skipped: {text}" for text in search.rejected]
    if importance is not None:
        items += [n for n in importance.notes if n not in items]
    if not items:
        return "<h2>Warnings</h2><p class='muted'>None.</p>"
    return (
        "<h2>Warnings and notes</h2><ul>"
        + "".join(f"<li>{escape(text)}</li>" for text in items)
        + "</ul>"
    )


def _settings(
    ev: Evaluation | None, search: SearchResult | None, importance: ImportanceResult | None
) -> str:
    settings: dict[str, Any] = {}
    if ev is not None:
        settings.update(ev.settings.to_dict())
    elif importance is not None:
        settings.update(importance.settings.to_dict())
    if search is not None:
        settings["grid"] = search.to_dict()["grid"]
    settings["versions"] = {"python": platform.python_version(), **vw_versions()}
    rows = "".join(
        f'<tr><td class="name">{escape(k)}</td><td class="name"><code>'
        f"{escape(json.dumps(v))}</code></td></tr>"
        for k, v in settings.items()
    )
    return f"<h2>Settings</h2><table>{rows}</table>"
