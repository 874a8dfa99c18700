"""Output names of `recap push` (under the serving URI)."""

LATEST_FILE = "LATEST"  # JSON pointer to the version serving loads: written last, after the copy
