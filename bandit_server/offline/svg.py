"""Small inline-SVG charts for self-contained HTML reports: interval bars and line charts."""

from __future__ import annotations

import math
from collections.abc import Sequence
from html import escape

import numpy as np

from bandit_server.offline.dataset import FloatArray

PALETTE = (
    "#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e",
    "#17becf", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22",
)  # fmt: skip


DASHES = ("", "7,3", "2,2", "9,3,2,3")


def color(i: int) -> str:
    return PALETTE[i % len(PALETTE)]


def dash(i: int) -> str:
    """A stroke pattern per round of the palette, so more lines than colours stay distinct."""
    pattern = DASHES[(i // len(PALETTE)) % len(DASHES)]
    return f' stroke-dasharray="{pattern}"' if pattern else ""


def nice_ticks(low: float, high: float, count: int = 5) -> list[float]:
    """Round tick values covering [low, high]."""
    if not (math.isfinite(low) and math.isfinite(high)) or high <= low:
        return [low]
    raw = (high - low) / max(count, 1)
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw)
    first = math.ceil(low / step) * step
    return [first + i * step for i in range(int((high - first) / step + 1e-9) + 1)]


def fmt(value: float, digits: int = 4) -> str:
    if not math.isfinite(value):
        return "–"
    return f"{value:.{digits}g}" if abs(value) >= 1e-3 or value == 0 else f"{value:.2e}"


def padded_range(values: Sequence[float], pad: float = 0.05) -> tuple[float, float]:
    finite = [v for v in values if math.isfinite(v)]
    if not finite:
        return (0.0, 1.0)
    low, high = min(finite), max(finite)
    if high == low:
        return (low - 0.5, high + 0.5)
    span = high - low
    return (low - pad * span, high + pad * span)


def interval_bar(
    value: float,
    lower: float,
    upper: float,
    scale: tuple[float, float],
    *,
    reference: float | None = None,
    fill: str = "#1f77b4",
    width: int = 170,
    height: int = 20,
) -> str:
    """One interval as a horizontal bar with a dot at the estimate, on a shared scale; an
    optional dashed reference line (e.g. the logged policy's value, or 0 for differences)."""
    low, high = scale

    def x(v: float) -> float:
        clipped = min(max(v, low), high)
        return 4 + (width - 8) * (clipped - low) / (high - low)

    parts = [f'<svg width="{width}" height="{height}" role="img">']
    if reference is not None and low <= reference <= high:
        parts.append(
            f'<line x1="{x(reference):.1f}" x2="{x(reference):.1f}" y1="0" y2="{height}" '
            'stroke="#555" stroke-dasharray="3,2"/>'
        )
    if math.isfinite(lower) and math.isfinite(upper):
        parts.append(
            f'<rect x="{x(lower):.1f}" y="{height / 2 - 4:.1f}" '
            f'width="{max(x(upper) - x(lower), 1):.1f}" height="8" fill="{fill}" '
            'fill-opacity="0.35" rx="2"/>'
        )
    if math.isfinite(value):
        parts.append(f'<circle cx="{x(value):.1f}" cy="{height / 2}" r="3.5" fill="{fill}"/>')
    parts.append("</svg>")
    return "".join(parts)


def axis_svg(ticks: Sequence[float], low: float, high: float, width: int = 170) -> str:
    """Tick labels for a column of interval bars."""
    parts = [f'<svg width="{width}" height="16">']
    for tick in ticks:
        xpos = 4 + (width - 8) * (tick - low) / (high - low)
        parts.append(
            f'<text x="{xpos:.1f}" y="12" font-size="10" text-anchor="middle" '
            f'fill="#555">{fmt(tick, 3)}</text>'
        )
    parts.append("</svg>")
    return "".join(parts)


def downsample(y: FloatArray, points: int = 400, start: int = 0) -> tuple[FloatArray, FloatArray]:
    """(x, y) at about `points` evenly spaced event counts from `start` (1-based x)."""
    n = len(y)
    if n == 0:
        return np.zeros(0), np.zeros(0)
    first = min(start, n - 1)
    idx = np.unique(np.linspace(first, n - 1, num=min(points, n - first)).astype(np.int64))
    return (idx + 1).astype(np.float64), y[idx]


def line_chart(
    series: Sequence[tuple[str, FloatArray, FloatArray]],
    *,
    x_label: str,
    y_label: str,
    width: int = 1180,
    height: int = 440,
) -> str:
    """Lines (name, x, y) with axes, grid, and a legend to the right."""
    legend_width = 420
    height = max(height, 40 + 18 * len(series))
    left, right, top, bottom = 64, legend_width + 16, 16, 44
    plot_w, plot_h = width - left - right, height - top - bottom
    xs = [v for _, x, _ in series for v in (float(x.min()), float(x.max())) if len(x)]
    ys = [float(v) for _, _, y in series for v in y if math.isfinite(float(v))]
    x_low, x_high = (min(xs), max(xs)) if xs else (0.0, 1.0)
    if x_high == x_low:
        x_high = x_low + 1
    y_low, y_high = padded_range(ys)

    def px(v: float) -> float:
        return left + plot_w * (v - x_low) / (x_high - x_low)

    def py(v: float) -> float:
        return top + plot_h * (1 - (v - y_low) / (y_high - y_low))

    out = [
        f'<svg width="{width}" height="{height}" role="img" font-family="sans-serif">',
        f'<rect x="{left}" y="{top}" width="{plot_w}" height="{plot_h}" fill="#fff" '
        'stroke="#bbb"/>',
    ]
    for tick in nice_ticks(y_low, y_high, 6):
        out.append(
            f'<line x1="{left}" x2="{left + plot_w}" y1="{py(tick):.1f}" y2="{py(tick):.1f}" '
            f'stroke="#eee"/><text x="{left - 6}" y="{py(tick) + 4:.1f}" font-size="11" '
            f'text-anchor="end" fill="#444">{fmt(tick, 3)}</text>'
        )
    for tick in nice_ticks(x_low, x_high, 6):
        out.append(
            f'<line x1="{px(tick):.1f}" x2="{px(tick):.1f}" y1="{top}" y2="{top + plot_h}" '
            f'stroke="#eee"/><text x="{px(tick):.1f}" y="{top + plot_h + 16}" font-size="11" '
            f'text-anchor="middle" fill="#444">{fmt(tick, 6)}</text>'
        )
    out.append(
        f'<text x="{left + plot_w / 2:.0f}" y="{height - 6}" font-size="12" '
        f'text-anchor="middle">{escape(x_label)}</text>'
        f'<text x="14" y="{top + plot_h / 2:.0f}" font-size="12" text-anchor="middle" '
        f'transform="rotate(-90 14 {top + plot_h / 2:.0f})">{escape(y_label)}</text>'
    )
    for i, (name, x, y) in enumerate(series):
        points = " ".join(
            f"{px(float(a)):.1f},{py(float(b)):.1f}"
            for a, b in zip(x, y, strict=True)
            if math.isfinite(float(b))
        )
        out.append(
            f'<polyline points="{points}" fill="none" stroke="{color(i)}" '
            f'stroke-width="1.6"{dash(i)}><title>{escape(name)}</title></polyline>'
        )
        ly = top + 8 + 18 * i
        lx = width - legend_width + 4
        label = name if len(name) <= 66 else name[:63] + "..."
        out.append(
            f'<line x1="{lx}" x2="{lx + 22}" y1="{ly}" y2="{ly}" stroke="{color(i)}" '
            f'stroke-width="3"{dash(i)}/><text x="{lx + 28}" y="{ly + 4}" font-size="11">'
            f"<title>{escape(name)}</title>{escape(label)}</text>"
        )
    out.append("</svg>")
    return "".join(out)
