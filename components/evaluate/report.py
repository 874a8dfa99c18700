"""The self-contained HTML evaluation report: summary, blessing, ranking, and per task
ROC, precision-recall and calibration plots as inline SVG, overlaid with the baseline's.

Rendered from the JSON documents the step writes (metrics.json, blessing.json and the
baseline's metrics.json), so a report can be rebuilt from outputs alone. No external
assets: it opens from a bucket, a KFP artifact viewer or a laptop without network.
"""

from __future__ import annotations

import html
import math
from typing import Any

from components.evaluate.blessing import as_float
from components.evaluate.plots import BASELINE_COLOR, Series, line_chart

SUMMARY_COLUMNS = (
    ("auroc", "AUROC"), ("average_precision", "AP"), ("rce", "RCE"), ("nrce", "NRCE"),
    ("log_loss", "log loss"), ("calibration", "calibration"), ("count", "count"), ("positives", "positives"),
)

STYLE = """
body { font-family: system-ui, sans-serif; margin: 24px; color: #222; }
table { border-collapse: collapse; margin: 8px 0 16px; }
th, td { border: 1px solid #ccc; padding: 3px 8px; text-align: right; font-size: 13px; }
th:first-child, td:first-child { text-align: left; }
.blessed { background: #e6f4ea; border: 1px solid #34a853; padding: 8px 12px; }
.refused { background: #fce8e6; border: 1px solid #d93025; padding: 8px 12px; }
.fail { color: #d93025; font-weight: bold; }
.plots { display: flex; flex-wrap: wrap; gap: 12px; }
svg.plot text { font-size: 11px; }
svg.plot text.title { font-size: 13px; font-weight: bold; }
.muted { color: #666; font-size: 13px; }
"""

# Lets a headless browser (and a person) confirm every plot was laid out with a real size.
CHECK_SCRIPT = """
document.addEventListener('DOMContentLoaded', function () {
  var plots = document.querySelectorAll('svg.plot');
  var laidOut = Array.prototype.filter.call(plots, function (p) {
    var box = p.getBoundingClientRect(); return box.width > 0 && box.height > 0;
  });
  document.body.setAttribute('data-plots', String(plots.length));
  document.body.setAttribute('data-plots-rendered', String(laidOut.length));
});
"""


def _fmt(value: Any, digits: int = 4) -> str:
    if value is None:
        return '<span class="fail">NaN</span>'
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        if math.isnan(value):
            return '<span class="fail">NaN</span>'
        return f"{value:.{digits}f}"
    return html.escape(str(value))


def _delta(current: Any, baseline: Any) -> str:
    a, b = as_float(current), as_float(baseline)
    if math.isnan(a) or math.isnan(b):
        return "–"
    return f"{a - b:+.4f}"


def _summary_table(tasks: dict[str, Any], baseline: dict[str, Any] | None) -> str:
    head = "".join(f"<th>{label}</th>" for _, label in SUMMARY_COLUMNS)
    if baseline is not None:
        head += "<th>baseline AUROC</th><th>Δ AUROC</th><th>baseline RCE</th><th>Δ RCE</th>"
    rows = []
    for task, values in tasks.items():
        cells = "".join(f"<td>{_fmt(values.get(key))}</td>" for key, _ in SUMMARY_COLUMNS)
        if baseline is not None:
            base = baseline.get("tasks", {}).get(task, {})
            cells += (f"<td>{_fmt(base.get('auroc'))}</td><td>{_delta(values.get('auroc'), base.get('auroc'))}</td>"
                      f"<td>{_fmt(base.get('rce'))}</td><td>{_delta(values.get('rce'), base.get('rce'))}</td>")
        rows.append(f"<tr><td>{html.escape(task)}</td>{cells}</tr>")
    return f'<table class="summary"><tr><th>task</th>{head}</tr>{"".join(rows)}</table>'


def _blessing_section(blessing: dict[str, Any]) -> str:
    css = "blessed" if blessing["blessed"] else "refused"
    rows = "".join(
        f'<tr><td>{html.escape(task)}</td><td class="{"" if v["passed"] else "fail"}">'
        f'{"pass" if v["passed"] else "FAIL"}</td><td style="text-align:left">'
        f'{html.escape("; ".join(v["reasons"]))}</td></tr>'
        for task, v in blessing["tasks"].items())
    return (f'<h2>Blessing</h2><div class="{css}"><b>{"BLESSED" if blessing["blessed"] else "NOT BLESSED"}</b>'
            f' — {html.escape(blessing["reason"])}</div>'
            f'<table><tr><th>task</th><th>verdict</th><th>reasons</th></tr>{rows}</table>')


def _ranking_section(ranking: dict[str, Any], baseline: dict[str, Any] | None) -> str:
    if not ranking:
        return ""
    base = (baseline or {}).get("ranking") or {}
    weights = "".join(f"<tr><td>{html.escape(t)}</td><td>{w:g}</td></tr>"
                      for t, w in ranking.get("engagement_weights", {}).items())
    compare = (f" (baseline {_fmt(base.get('gauc'))}, Δ {_delta(ranking.get('gauc'), base.get('gauc'))})"
               if base else "")
    return (
        "<h2>Combined ranking score</h2>"
        f"<p>Per-user GAUC of the score against the weighted engagement value: <b>{_fmt(ranking.get('gauc'))}</b>"
        f"{compare} over {_fmt(ranking.get('users'))} users "
        f"(user sample fraction {_fmt(ranking.get('sample_fraction'))}, "
        f"{_fmt(ranking.get('sampled_examples'))} impressions; mean score {_fmt(ranking.get('mean_score'))}).</p>"
        f"<details><summary>engagement weights</summary><table><tr><th>task</th><th>weight</th></tr>{weights}"
        "</table></details>"
    )


def _curve(values: dict[str, Any], name: str, x: str, y: str) -> tuple[list[float], list[float]]:
    points = values.get("curves", {}).get(name, [])
    return [as_float(p[x]) for p in points], [as_float(p[y]) for p in points]


def _task_plots(task: str, values: dict[str, Any], base: dict[str, Any] | None) -> str:
    def series(name: str, x: str, y: str, markers: bool = False) -> list[Series]:
        out = [Series("this model", *_curve(values, name, x, y), markers=markers)]
        if base is not None:
            out.append(Series("baseline", *_curve(base, name, x, y), color=BASELINE_COLOR, dashed=True,
                              markers=markers))
        return out

    roc = line_chart(f"ROC — AUROC {_fmt(values.get('auroc'))}", series("roc", "fpr", "tpr"),
                     "false positive rate", "true positive rate", diagonal=True, plot_id=f"roc-{task}",
                     legend="lower right")
    pr = line_chart(f"Precision-recall — AP {_fmt(values.get('average_precision'))}",
                    series("precision_recall", "recall", "precision"), "recall", "precision",
                    plot_id=f"pr-{task}", legend="lower left")
    reliability = series("reliability", "mean_prediction", "observed_rate", markers=True)
    top = max([v for s in reliability for v in (*s.xs, *s.ys) if math.isfinite(v)] or [1.0])
    calibration = line_chart(f"Calibration — {_fmt(values.get('calibration'), 3)}", reliability,
                             "mean prediction", "observed rate", x_range=(0.0, top * 1.05),
                             y_range=(0.0, top * 1.05), diagonal=True, plot_id=f"calibration-{task}",
                             legend="upper left")
    matrix = values.get("confusion_matrix") or [[0, 0], [0, 0]]
    threshold = as_float(values.get("threshold"))
    confusion = (f'<table><tr><th>threshold {threshold:.3g}</th><th>predicted negative</th>'
                 f'<th>predicted positive</th></tr><tr><td>actual negative</td><td>{_fmt(matrix[0][0])}</td>'
                 f'<td>{_fmt(matrix[0][1])}</td></tr><tr><td>actual positive</td><td>{_fmt(matrix[1][0])}</td>'
                 f'<td>{_fmt(matrix[1][1])}</td></tr></table>')
    bound = values.get("auroc_error_bound")
    note = f'<p class="muted">binned AUROC within ±{_fmt(bound, 6)} of exact</p>' if bound is not None else ""
    return (f'<section class="task" id="task-{html.escape(task)}"><h3>{html.escape(task)}</h3>'
            f'<div class="plots">{roc}{pr}{calibration}</div>{confusion}{note}</section>')


def render_report(metrics: dict[str, Any], blessing: dict[str, Any], baseline: dict[str, Any] | None = None) -> str:
    """The whole report as one HTML string."""
    info = [("model", metrics.get("model_uri")), ("data", metrics.get("data_uri")),
            ("baseline", blessing.get("baseline_uri") or ("given" if baseline else "none")), ("examples", metrics.get("examples")),
            ("examples/s", metrics.get("examples_per_s")), ("predictions", metrics.get("prediction")),
            ("weighted by downsampling weights", metrics.get("weighted"))]
    info_rows = "".join(f"<tr><td>{k}</td><td style='text-align:left'>{_fmt(v, 1)}</td></tr>" for k, v in info)
    sections = "".join(_task_plots(task, values, (baseline or {}).get("tasks", {}).get(task) if baseline else None)
                       for task, values in metrics["tasks"].items())
    return (
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
        "<title>recap evaluation report</title>"
        f"<style>{STYLE}</style><script>{CHECK_SCRIPT}</script></head><body>"
        "<h1>Heavy Ranker evaluation</h1>"
        f"<table>{info_rows}</table>"
        f"{_blessing_section(blessing)}"
        f"<h2>Summary</h2>{_summary_table(metrics['tasks'], baseline)}"
        f"{_ranking_section(metrics.get('ranking') or {}, baseline)}"
        f"<h2>Per task</h2>{sections}"
        "</body></html>\n"
    )
