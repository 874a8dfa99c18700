"""Output names of `recap validate` (under its --out URI)."""

STATISTICS_FILE = "statistics.json"  # pass as --reference-stats next time to check drift
ANOMALIES_FILE = "anomalies.json"
REPORT_FILE = "report.html"
METRICS_FILE = "metrics.json"
