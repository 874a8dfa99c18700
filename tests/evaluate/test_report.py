"""The HTML report: every plot present, baseline overlaid, and it renders in headless Chromium."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.evaluate.test_evaluator import write_synthetic

CHROMIUM = shutil.which("chromium") or ("/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None)
PLOT_KINDS = ("roc", "pr", "calibration")


@pytest.fixture(scope="module")
def reports(tmp_path_factory, local_schema) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("reports")
    write_synthetic(local_schema, str(root / "base"))
    baseline = json.loads((root / "base" / "metrics.json").read_text())
    write_synthetic(local_schema, str(root / "new"), baseline=baseline)
    return {"plain": root / "base" / "report.html", "with_baseline": root / "new" / "report.html"}


def test_report_is_self_contained_with_three_plots_per_task(reports, local_schema) -> None:
    html = reports["plain"].read_text()
    for task in local_schema.task_names:
        for kind in PLOT_KINDS:
            assert f'id="{kind}-{task}"' in html
    assert html.count('<svg class="plot"') == 3 * len(local_schema.task_names)
    assert not re.search(r'(src|href)="(https?:)?//', html), "report must not load anything remote"
    assert "Combined ranking score" in html and "BLESSED" in html


def test_report_overlays_the_baseline_when_given(reports, local_schema) -> None:
    plain, compared = reports["plain"].read_text(), reports["with_baseline"].read_text()
    assert "baseline AUROC" not in plain and "baseline AUROC" in compared
    # Each plot gets a second (dashed) series for the baseline.
    assert compared.count('class="series"') == 2 * plain.count('class="series"')


def _chromium(*args: str, user_data_dir: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run", "--enable-logging=stderr",
         f"--user-data-dir={user_data_dir}", *args],
        capture_output=True, text=True, timeout=120,
    )


@pytest.mark.integration
@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (Debian package `chromium`)")
def test_report_renders_in_headless_chromium_with_every_plot_laid_out(reports, local_schema, tmp_path) -> None:
    page = reports["with_baseline"].resolve().as_uri()
    dom = _chromium("--dump-dom", page, user_data_dir=tmp_path / "profile-dom")
    assert dom.returncode == 0, dom.stderr[-2000:]
    expected = 3 * len(local_schema.task_names)
    # The report's own script counts the plots that got a real layout box in the browser.
    assert f'data-plots="{expected}"' in dom.stdout
    assert f'data-plots-rendered="{expected}"' in dom.stdout
    for task in local_schema.task_names:
        for kind in PLOT_KINDS:
            assert f'id="{kind}-{task}"' in dom.stdout
    assert "Uncaught" not in dom.stderr

    shot = tmp_path / "report.png"
    result = _chromium("--window-size=1280,2400", f"--screenshot={shot}", page,
                       user_data_dir=tmp_path / "profile-shot")
    assert result.returncode == 0, result.stderr[-2000:]
    data = shot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 20_000
