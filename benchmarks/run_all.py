"""Run every benchmark, then assemble BENCHMARKS.md from benchmarks/results/*.md.

Each `bench_<area>.py` measures its baselines and ours in one run (ratios are what matter on a
shared, noisy machine) and writes `results/<area>.md`. `--only validate,convert` limits the run;
`--assemble` only rebuilds BENCHMARKS.md from existing results.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
ORDER = ["validate", "convert", "train", "evaluate"]


def areas() -> list[str]:
    found = {p.stem.removeprefix("bench_") for p in HERE.glob("bench_*.py")}
    return [a for a in ORDER if a in found] + sorted(found - set(ORDER))


def machine_line() -> str:
    return (f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
            f"measured {dt.datetime.now(dt.UTC).strftime('%Y-%m-%d')}")


def assemble() -> Path:
    sections = []
    # Each area's own results first; a bench may write more than one file (train_e2e.md), kept after its area's.
    stems = sorted(p.stem for p in (HERE / "results").glob("*.md"))
    for area in areas():
        for stem in [area] + [s for s in stems if s.startswith(f"{area}_")]:
            if stem in stems:
                sections.append((HERE / "results" / f"{stem}.md").read_text().strip())
    text = "\n\n".join([
        "# Benchmarks",
        "Produced by `make bench` (`python -m benchmarks.run_all`); each section is written by "
        "`benchmarks/bench_<area>.py`, which measures the baselines and ours in the same run. "
        f"Machine: {machine_line()}. All numbers are CPU; the machine is shared, so compare ratios.",
        *sections,
    ])
    out = ROOT / "BENCHMARKS.md"
    out.write_text(text + "\n")
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--only", default="", help="comma-separated areas, e.g. validate,convert")
    parser.add_argument("--assemble", action="store_true", help="only rebuild BENCHMARKS.md")
    args = parser.parse_args()
    failed = []
    if not args.assemble:
        chosen = [a for a in areas() if not args.only or a in args.only.split(",")]
        for area in chosen:
            print(f"== benchmark {area}", flush=True)
            code = subprocess.call([sys.executable, "-m", f"benchmarks.bench_{area}"], cwd=ROOT)
            if code != 0:
                failed.append(area)
    print(f"wrote {assemble()}")
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
