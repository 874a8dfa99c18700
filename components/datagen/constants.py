"""What `recap data generate` writes next to its Parquet files (names other steps look for)."""

MANIFEST_KIND = "raw-parquet"
ORACLE_FILE = "oracle.json"  # the true probabilities' metrics; validate skips it as a sidecar
