"""The generator streams row groups: its peak memory does not grow with --rows."""

from __future__ import annotations

import subprocess
import sys

import pytest

PEAK_RSS = """
import sys
from components.datagen import generate
generate("local", sys.argv[1], rows=int(sys.argv[2]), files=1, seed=1, row_group_rows=5_000)
# VmHWM is this process's own peak; ru_maxrss would include the parent's RSS at fork
print(next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM")))
"""


def _peak_rss_kb(out: str, rows: int) -> int:
    done = subprocess.run([sys.executable, "-c", PEAK_RSS, out, str(rows)], capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    return int(done.stdout.strip().splitlines()[-1])


@pytest.mark.integration
def test_peak_memory_is_flat_when_rows_grow_10x(tmp_path) -> None:
    small = _peak_rss_kb(str(tmp_path / "small"), 20_000)
    large = _peak_rss_kb(str(tmp_path / "large"), 200_000)
    assert large < small + 15_000, (small, large)  # KB; 180k more rows are ~100 MB
