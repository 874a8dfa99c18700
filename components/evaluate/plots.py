"""Tiny inline-SVG line charts for the evaluation report: no plotting library, no network."""

from __future__ import annotations

import html
import math
from collections.abc import Sequence
from dataclasses import dataclass

WIDTH, HEIGHT = 340, 280
LEFT, RIGHT, TOP, BOTTOM = 52, 12, 28, 44
CURRENT_COLOR, BASELINE_COLOR, GUIDE_COLOR = "#1f77b4", "#d62728", "#999999"


@dataclass(frozen=True)
class Series:
    name: str
    xs: Sequence[float]
    ys: Sequence[float]
    color: str = CURRENT_COLOR
    dashed: bool = False
    markers: bool = False


def _ticks(low: float, high: float, count: int = 5) -> list[float]:
    """About `count` round tick values covering [low, high]."""
    span = high - low
    if span <= 0 or not math.isfinite(span):
        return [low]
    raw = span / (count - 1)
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw)
    first = math.ceil(low / step - 1e-9) * step
    ticks, value = [], first
    while value <= high + 1e-9 * step:
        ticks.append(round(value, 12))
        value += step
    return ticks


def _label(value: float) -> str:
    return f"{value:.3g}"


def line_chart(title: str, series: Sequence[Series], x_label: str, y_label: str,
               x_range: tuple[float, float] = (0.0, 1.0), y_range: tuple[float, float] = (0.0, 1.0),
               diagonal: bool = False, plot_id: str = "", legend: str = "lower right") -> str:
    """One chart as an `<svg class="plot">` element; `plot_id` lets tests find every plot.

    `legend` is a corner ("upper left", "lower right", ...) where the curves usually are not.
    """
    (x0, x1), (y0, y1) = x_range, y_range
    x1 = x1 if x1 > x0 else x0 + 1.0
    y1 = y1 if y1 > y0 else y0 + 1.0
    inner_w, inner_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM

    def sx(x: float) -> float:
        return LEFT + (min(max(x, x0), x1) - x0) / (x1 - x0) * inner_w

    def sy(y: float) -> float:
        return TOP + inner_h - (min(max(y, y0), y1) - y0) / (y1 - y0) * inner_h

    parts = [
        f'<svg class="plot" id="{html.escape(plot_id)}" xmlns="http://www.w3.org/2000/svg" '
        f'width="{WIDTH}" height="{HEIGHT}" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" '
        f'aria-label="{html.escape(title)}">',
        f'<text x="{WIDTH / 2}" y="16" text-anchor="middle" class="title">{html.escape(title)}</text>',
        f'<rect x="{LEFT}" y="{TOP}" width="{inner_w}" height="{inner_h}" fill="none" stroke="#333"/>',
    ]
    for tick in _ticks(x0, x1):
        parts.append(f'<line x1="{sx(tick):.1f}" y1="{TOP + inner_h}" x2="{sx(tick):.1f}" '
                     f'y2="{TOP + inner_h + 4}" stroke="#333"/>'
                     f'<text x="{sx(tick):.1f}" y="{TOP + inner_h + 16}" text-anchor="middle">{_label(tick)}</text>')
    for tick in _ticks(y0, y1):
        parts.append(f'<line x1="{LEFT - 4}" y1="{sy(tick):.1f}" x2="{LEFT}" y2="{sy(tick):.1f}" stroke="#333"/>'
                     f'<text x="{LEFT - 6}" y="{sy(tick) + 4:.1f}" text-anchor="end">{_label(tick)}</text>')
    parts.append(f'<text x="{LEFT + inner_w / 2}" y="{HEIGHT - 8}" text-anchor="middle">{html.escape(x_label)}</text>')
    parts.append(f'<text transform="translate(13 {TOP + inner_h / 2}) rotate(-90)" '
                 f'text-anchor="middle">{html.escape(y_label)}</text>')
    if diagonal:
        low, high = max(x0, y0), min(x1, y1)
        parts.append(f'<line x1="{sx(low):.1f}" y1="{sy(low):.1f}" x2="{sx(high):.1f}" y2="{sy(high):.1f}" '
                     f'stroke="{GUIDE_COLOR}" stroke-dasharray="3 3"/>')
    for index, line in enumerate(series):
        points = [(x, y) for x, y in zip(line.xs, line.ys, strict=True) if math.isfinite(x) and math.isfinite(y)]
        if points:
            coords = " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in points)
            dash = ' stroke-dasharray="6 3"' if line.dashed else ""
            parts.append(f'<polyline class="series" points="{coords}" fill="none" stroke="{line.color}" '
                         f'stroke-width="1.8"{dash}/>')
            if line.markers:
                parts.extend(f'<circle cx="{sx(x):.1f}" cy="{sy(y):.1f}" r="2.5" fill="{line.color}"/>'
                             for x, y in points)
        upper, left = legend.startswith("upper"), legend.endswith("left")
        legend_y = TOP + 14 + 14 * index if upper else TOP + inner_h - 8 - 14 * (len(series) - 1 - index)
        legend_x = LEFT + 8 if left else LEFT + inner_w - 100
        dash = ' stroke-dasharray="6 3"' if line.dashed else ""
        parts.append(f'<line x1="{legend_x}" y1="{legend_y - 4}" x2="{legend_x + 18}" y2="{legend_y - 4}" '
                     f'stroke="{line.color}" stroke-width="2"{dash}/>'
                     f'<text x="{legend_x + 22}" y="{legend_y}">{html.escape(line.name)}</text>')
    if not any(len(line.xs) for line in series):
        parts.append(f'<text x="{WIDTH / 2}" y="{HEIGHT / 2}" text-anchor="middle" fill="#a00">'
                     f'undefined (no positives or negatives)</text>')
    parts.append("</svg>")
    return "".join(parts)
