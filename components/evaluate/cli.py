"""`recap evaluate --model URI --data MANIFEST_URI --out URI [--baseline METRICS_URI] [--config_path ...]`.

Exit code 0 whether or not the model is blessed (the pipeline branches on blessing.json);
1 for bad data, 2 for a bad config or a missing input.
"""

from __future__ import annotations

import argparse
from typing import Any

from components.common.errors import ConfigError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, help="URI of the exported model")
    parser.add_argument("--data", required=True, help="URI of the eval split (its directory or _MANIFEST.json)")
    parser.add_argument("--out", required=True, help="output URI: metrics, report.html, blessing.json")
    parser.add_argument("--baseline", default=None, help="metrics.json (or its directory) of the production model")
    parser.add_argument("--config_path", "--config-path", dest="config_path", default=None,
                        help="evaluation config YAML (default: the bundled configs/evaluate.yaml)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config field, e.g. --set read.batch_size=512 (YAML value)")


def parse_overrides(items: list[str]) -> dict[str, Any]:
    """`--set KEY=VALUE` flags as {dotted key: YAML-parsed value}."""
    import yaml

    overrides: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"--set {item}: expected KEY=VALUE")
        overrides[key] = yaml.safe_load(value)
    return overrides


def run(args: argparse.Namespace) -> int:
    from components.evaluate.config import load_evaluate_config

    config = load_evaluate_config(args.config_path, parse_overrides(args.overrides))  # before torch loads
    from components.common import storage
    from components.evaluate import run as evaluate
    from components.evaluate.constants import REPORT_FILE

    result = evaluate(args.model, args.data, args.out, config, baseline_uri=args.baseline)
    print(f"{'BLESSED' if result.blessed else 'NOT BLESSED'}: {result.blessing.reason}")
    print(f"report: {storage.join(result.out_uri, REPORT_FILE)}")
    return 0
