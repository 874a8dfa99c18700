"""A self-contained HTML report: summary, anomalies, labels, per-group tables, inline SVG plots.

No scripts, fonts or stylesheets from elsewhere: the Kubeflow UI shows HTML artifacts in a
sandboxed frame, and the report must also open from a bucket or a laptop.
"""

from __future__ import annotations

import html
import math
from typing import Any

import numpy as np

from components.common.schema import Schema
from components.validate import histogram as H
from components.validate.anomalies import Anomaly

_CSS = """
body{font:14px/1.4 -apple-system,Segoe UI,Roboto,Helvetica,Arial,sans-serif;margin:16px;color:#202124}
h1{font-size:20px;margin:0 0 8px}h2{font-size:17px;margin:24px 0 8px;border-bottom:1px solid #dadce0}
h3{font-size:15px;margin:16px 0 6px}table{border-collapse:collapse;margin:6px 0}
td,th{border:1px solid #dadce0;padding:3px 8px;text-align:left;vertical-align:top}
th{background:#f1f3f4}td.n{text-align:right;font-variant-numeric:tabular-nums}
.badge{display:inline-block;padding:3px 10px;border-radius:12px;color:#fff;font-weight:600}
.ok{background:#188038}.fail{background:#c5221f}.error{color:#c5221f;font-weight:600}
.warning{color:#b06000;font-weight:600}.muted{color:#5f6368}svg{display:block;margin:4px 0}
code{background:#f1f3f4;padding:0 3px}
"""


def _e(value: Any) -> str:
    return html.escape(str(value))


def _fmt(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        if not math.isfinite(value):
            return str(value)
        if value == 0:
            return "0"
        if abs(value) >= 1e6 or abs(value) < 1e-3:
            return f"{value:.3g}"
        return f"{value:,.4g}"
    return _e(value)


def _table(headers: list[str], rows: list[list[Any]], numeric: set[int] | None = None) -> str:
    numeric = numeric or set()
    head = "".join(f"<th>{_e(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f'<td class="n">{_fmt(c)}</td>' if i in numeric else f"<td>{c if isinstance(c, _Raw) else _fmt(c)}</td>"
                                    for i, c in enumerate(row)) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


class _Raw(str):
    """Already-escaped HTML for a table cell."""


def bar_chart(values: list[float], labels: list[str], title: str, threshold: float | None = None,
              width: int = 720, bar_height: int = 14, log_scale: bool = False) -> str:
    """Horizontal bars (one per label) as inline SVG, with an optional threshold line."""
    if not values:
        return ""
    label_w, pad = int(min(380, 24 + 6.4 * max(len(label) for label in labels))), 4
    plot_w = width - label_w - 70
    vals = [max(v, 0.0) for v in values]

    def scale(v: float) -> float:
        if log_scale:
            lo = math.log10(max(min(x for x in vals if x > 0), 1e-6)) if any(vals) else -6
            top = math.log10(max(max(vals), threshold or 0, 1e-6))
            return 0.0 if v <= 0 else plot_w * (math.log10(v) - lo + 0.3) / (top - lo + 0.3)
        top = max(max(vals), threshold or 0) or 1.0
        return plot_w * v / top

    height = len(vals) * (bar_height + pad) + 24
    parts = [f'<svg width="{width}" height="{height}" role="img" aria-label="{_e(title)}">',
             f'<text x="0" y="12" font-size="12" fill="#5f6368">{_e(title)}</text>']
    for i, (v, label) in enumerate(zip(vals, labels, strict=True)):
        y = 20 + i * (bar_height + pad)
        color = "#c5221f" if threshold is not None and v > threshold else "#1a73e8"
        parts.append(f'<text x="{label_w - 6}" y="{y + bar_height - 3}" font-size="11" text-anchor="end">{_e(label)}</text>')
        parts.append(f'<rect x="{label_w}" y="{y}" width="{max(scale(v), 1):.1f}" height="{bar_height}" fill="{color}"/>')
        parts.append(f'<text x="{label_w + scale(v) + 4:.1f}" y="{y + bar_height - 3}" font-size="11">{_fmt(v)}</text>')
    if threshold is not None:
        x = label_w + scale(threshold)
        parts.append(f'<line x1="{x:.1f}" y1="16" x2="{x:.1f}" y2="{height}" stroke="#c5221f" stroke-dasharray="4 3"/>')
    parts.append("</svg>")
    return "".join(parts)


def histogram_chart(counts: list[int], title: str, width: int = 640, height: int = 130) -> str:
    """Column chart of a log-scale histogram over the bins actually used."""
    counts_arr = np.asarray(counts, dtype=np.float64)
    used = np.flatnonzero(counts_arr)
    if not len(used):
        return ""
    first, last = int(used[0]), int(used[-1])
    shown = counts_arr[first: last + 1]
    lower, upper = H.bin_edges()
    bar_w = max((width - 20) / len(shown), 1.0)
    top = shown.max()
    parts = [f'<svg width="{width}" height="{height + 34}" role="img" aria-label="{_e(title)}">',
             f'<text x="0" y="12" font-size="12" fill="#5f6368">{_e(title)}</text>']
    for i, c in enumerate(shown):
        b = first + i
        h = 0 if c == 0 else max(1.0, height * math.sqrt(c / top))  # sqrt scale keeps small bins visible
        color = "#c5221f" if b == H.NON_FINITE else ("#188038" if b == H.ZERO else "#1a73e8")
        label = "NaN/inf" if b == H.NON_FINITE else ("0" if b == H.ZERO else f"[{lower[b]:.3g}, {upper[b]:.3g})")
        parts.append(f'<rect x="{10 + i * bar_w:.1f}" y="{16 + height - h:.1f}" width="{max(bar_w - 1, 0.5):.1f}" '
                     f'height="{h:.1f}" fill="{color}"><title>{_e(label)}: {int(c):,}</title></rect>')

    def edge_label(b: int) -> str:
        return "NaN/inf" if b == H.NON_FINITE else ("0" if b == H.ZERO else f"{lower[b]:.3g}")

    parts.append(f'<text x="10" y="{height + 30}" font-size="11">{_e(edge_label(first))}</text>')
    parts.append(f'<text x="{width - 10}" y="{height + 30}" font-size="11" text-anchor="end">{_e(edge_label(last))}</text>')
    parts.append(f'<text x="{width / 2}" y="{height + 30}" font-size="11" text-anchor="middle" fill="#5f6368">'
                 "log-scale bins (green: exact zeros, red: NaN/inf), bar height ~ sqrt(count)</text></svg>")
    return "".join(parts)


def _anomaly_rows(anomalies: list[Anomaly]) -> list[list[Any]]:
    rows = []
    for a in anomalies:
        examples = ", ".join(
            f"{_e(str(x.get('file', '')).rsplit('/', 1)[-1])}" + (f":{x['row']}" if "row" in x else "")
            for x in a.examples[:3])
        rows.append([_Raw(f'<span class="{a.severity}">{_e(a.severity)}</span>'), _Raw(f"<code>{_e(a.code)}</code>"),
                     a.column or "–", a.count, a.message, _Raw(examples or "–")])
    return rows


def _numeric_section(name: str, stats: dict[str, Any], drift: dict[str, Any] | None) -> str:
    s = stats["summary"]
    q = s.get("quantiles", {})
    out = [_table(["rows", "null rows", "zero share", "NaN", "inf", "non-finite share", "min", "mean", "std", "max",
                   *q.keys()],
                  [[s["rows"], s["null_rows"], s["zero_share"], s["nan"], s["inf"], s["non_finite_share"], s["min"],
                    s["mean"], s["std"], s["max"], *q.values()]], numeric=set(range(10 + len(q))))]
    out.append(histogram_chart(stats["group_histogram"], f"{name}: all values"))
    e = stats["elements"]
    count = np.maximum(np.asarray(e["count"], dtype=np.float64), 1)
    bad = (np.asarray(e["nan"]) + np.asarray(e["posinf"]) + np.asarray(e["neginf"])) / count
    zero = np.asarray(e["zeros"]) / count
    order = np.argsort(-(bad * 10 + zero), kind="stable")[:12] if len(count) > 12 else np.arange(len(count))
    rows = [[int(i), e["mean"][i], e["std"][i], e["min"][i], e["max"][i], float(zero[i]), float(bad[i])] for i in order]
    title = "elements" if len(count) <= 12 else f"12 of {len(count)} elements (most NaN/inf, then most zeros)"
    out.append(f"<h3>{_e(title)}</h3>" + _table(["element", "mean", "std", "min", "max", "zero share",
                                                 "NaN/inf share"], rows, numeric=set(range(7))))
    out.append(_drift_chart(name, drift))
    return "".join(out)


def _drift_chart(name: str, drift: dict[str, Any] | None) -> str:
    if not drift or not drift.get("top"):
        return ""
    top = drift["top"][:12]
    measure = "Jensen-Shannon" if drift["measure"] == "js" else "L-infinity"
    return bar_chart([t["distance"] for t in top], [f"{name}[{t['element']}]" for t in top],
                     f"drift vs reference ({measure}), worst elements", threshold=drift["threshold"])


def _binary_section(name: str, stats: dict[str, Any], drift: dict[str, Any] | None) -> str:
    s = stats["summary"]
    out = [_table(["rows", "null rows", "ones share", "values outside {0,1}"],
                  [[s["rows"], s["null_rows"], s["ones_share"], s["invalid"]]], numeric={0, 1, 2, 3})]
    shares = [0.0 if v is None else v for v in stats["elements"]["ones_share"]][:24]
    out.append(bar_chart(shares, [f"{name}[{i}]" for i in range(len(shares))],
                         f"share of ones, first {len(shares)} elements"))
    out.append(_drift_chart(name, drift))
    return "".join(out)


def _discrete_section(name: str, stats: dict[str, Any], drift: dict[str, Any] | None) -> str:
    s = stats["summary"]
    return _table(["rows", "null rows", "zero share", "min", "max", "most distinct codes in an element"],
                  [[s["rows"], s["null_rows"], s["zero_share"], s["min"], s["max"], s["distinct_codes_max"]]],
                  numeric=set(range(6))) + _drift_chart(name, drift)


def render_report(statistics: dict[str, Any], anomalies: list[Anomaly], drifts: list, metrics: dict[str, Any],
                  schema: Schema) -> str:
    errors = sum(a.is_error for a in anomalies)
    warnings = len(anomalies) - errors
    badge = (f'<span class="badge fail">FAILED: {errors} error(s)</span>' if errors
             else '<span class="badge ok">PASSED</span>')
    drift_by_column = statistics.get("drift", {}).get("columns", {})
    parts = [f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>Data validation: {_e(statistics['input'])}</title>",
             f"<style>{_CSS}</style></head><body>",
             f"<h1>Data validation {badge}</h1>",
             _table(["input", "schema", "files", "rows", "decoded MB", "errors", "warnings", "rows/s", "created"],
                    [[statistics["input"], f"{schema.name} ({schema.hash})", metrics["files"], metrics["rows"],
                      metrics["decoded_mb"], errors, warnings, metrics["rows_per_s"], statistics["created_at"]]],
                    numeric={2, 3, 4, 5, 6, 7})]
    if "drift" in statistics:
        parts.append(f'<p class="muted">Drift reference: {_e(statistics["drift"]["reference"])}</p>')
    parts.append("<h2>Anomalies</h2>")
    parts.append(_table(["severity", "code", "column", "count", "message", "examples (file:row)"],
                        _anomaly_rows(anomalies), numeric={3}) if anomalies else "<p>None.</p>")

    labels = [(spec.column, statistics["columns"][spec.column]) for spec in schema.labels]
    tasks = set(schema.task_names)
    parts.append("<h2>Labels</h2>")
    rates = [(c, s["summary"]) for c, s in labels if s.get("read")]
    parts.append(_table(["label", "task", "positives", "negatives", "other", "null", "positive rate"],
                        [[c, "yes" if c in tasks else "no", s["positives"], s["negatives"], s["other"],
                          s["null_rows"], s["positive_rate"]] for c, s in rates], numeric={2, 3, 4, 5, 6}))
    parts.append(bar_chart([s["positive_rate"] or 0.0 for _, s in rates], [c for c, _ in rates],
                           "positive rate per label (log scale)", log_scale=True))
    label_drift = [(c, drift_by_column[c]) for c, _ in rates if c in drift_by_column]
    if label_drift:
        parts.append(bar_chart([d["max"] for _, d in label_drift], [c for c, _ in label_drift],
                               "label drift vs reference (L-infinity = change of positive rate)",
                               threshold=label_drift[0][1]["threshold"]))

    ids = [(spec.column, statistics["columns"][spec.column]) for spec in schema.ids]
    parts.append("<h2>IDs</h2>")
    parts.append(_table(["column", "rows", "null", "negative", "approx. distinct", "top IDs share", "min", "max"],
                        [[c, s["summary"]["rows"], s["summary"]["null_rows"], s["summary"]["negative"],
                          s["summary"]["approx_distinct"], s["summary"]["top_ids_share"], s["summary"]["min"],
                          s["summary"]["max"]] for c, s in ids], numeric=set(range(1, 8))))

    sections = {"numeric": _numeric_section, "binary": _binary_section, "discrete": _discrete_section}
    for spec in schema.features:
        stats = statistics["columns"][spec.column]
        if stats["kind"] not in sections:
            continue
        parts.append(f"<h2>{_e(spec.column)} <span class='muted'>({_e(spec.role)}, length {spec.length})</span></h2>")
        if not stats.get("read"):
            parts.append("<p class='error'>Not read: missing or unreadable in every file.</p>")
            continue
        parts.append(sections[stats["kind"]](spec.column, stats, drift_by_column.get(spec.column)))

    if drifts:
        parts.append("<h2>Drift summary</h2>")
        parts.append(_table(["column", "measure", "max distance", "threshold", "elements over"],
                            [[d.column, d.measure, d.max, d.threshold, int((d.judged > d.threshold).sum())]
                             for d in drifts], numeric={2, 3, 4}))
    parts.append("</body></html>")
    return "\n".join(parts)
