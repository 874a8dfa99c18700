"""Recipe: change the blessing metric. One edit of the evaluate config: the blessing then judges
RCE (higher is better) and log loss (lower is better) against the baseline instead of AUROC."""

from __future__ import annotations

import yaml

from components.evaluate.blessing import bless
from components.evaluate.config import load_evaluate_config
from tests.recipes.recipes import RECIPES, changed_files, copy_of


def change_the_blessing_metric(configs) -> None:
    path = configs / "evaluate.yaml"
    text = path.read_text()
    old = "  baseline:\n    auroc: {tolerance: 0.005}\n"
    assert text.count(old) == 1, "the recipe's line is not in evaluate.yaml any more"
    path.write_text(text.replace(old, "  baseline:\n    rce: {tolerance: 0.5}\n    log_loss: {tolerance: 0.001}\n"))


def metrics(auroc: float, rce: float, log_loss: float) -> dict:
    return {"tasks": {"is_favorited": {"auroc": auroc, "average_precision": 0.2, "rce": rce, "nrce": rce,
                                       "log_loss": log_loss, "calibration": 1.0}}}


def test_the_blessing_judges_the_configured_metrics_in_their_directions(tmp_path):
    copy = copy_of(tmp_path / "repo", "configs")
    change_the_blessing_metric(copy / "configs")
    assert changed_files(copy, "configs") == list(RECIPES["Change the blessing metric"])
    config = load_evaluate_config(copy / "configs" / "evaluate.yaml").blessing
    baseline = metrics(auroc=0.80, rce=10.0, log_loss=0.200)

    lower_auroc = bless(metrics(auroc=0.70, rce=10.0, log_loss=0.200), config, baseline)
    assert lower_auroc.blessed  # AUROC is no longer compared
    lower_rce = bless(metrics(auroc=0.80, rce=9.0, log_loss=0.200), config, baseline)
    assert not lower_rce.blessed and "rce 9.0000 is 1.0000 below baseline 10.0000" in lower_rce.reason
    higher_loss = bless(metrics(auroc=0.80, rce=10.0, log_loss=0.205), config, baseline)
    assert not higher_loss.blessed and "log_loss 0.2050 is 0.0050 above baseline 0.2000" in higher_loss.reason
    written = yaml.safe_load(yaml.safe_dump(higher_loss.to_json()))
    assert written["criteria"]["baseline"] == {"rce": {"tolerance": 0.5, "direction": "higher"},
                                               "log_loss": {"tolerance": 0.001, "direction": "lower"}}
