"""Output names of `recap evaluate` (under its --out URI); push and the pipeline read them.

  metrics.json         everything: per-task scalars and curves, ranking GAUC, run info
                       (also the next run's --baseline)
  kfp_metrics.json     flat {name: number} for KFP `Metrics.log_metric`
  classification.json  per task ROC points and a 2x2 confusion matrix for KFP `ClassificationMetrics`
  report.html          self-contained HTML report
  blessing.json        {"blessed": bool, "reason": str, "tasks": {...}}: push checks it
  _MANIFEST.json       written last (kind "evaluation"): the output is complete only when it exists
"""

METRICS_FILE = "metrics.json"
KFP_METRICS_FILE = "kfp_metrics.json"
CLASSIFICATION_FILE = "classification.json"
REPORT_FILE = "report.html"
BLESSING_FILE = "blessing.json"
MANIFEST_KIND = "evaluation"
