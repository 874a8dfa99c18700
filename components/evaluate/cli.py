"""`recap evaluate --model URI --data MANIFEST_URI --out URI [--baseline METRICS_URI] [--config_path ...]`.

Exit code 0 whether or not the model is blessed (the pipeline branches on blessing.json);
1 for bad data, 2 for a bad config or a missing input.
"""

from __future__ import annotations

import argparse

from components.common.config import set_override
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


def run(args: argparse.Namespace) -> int:
    import yaml

    from components.common.config import parse_config, read_yaml
    from components.evaluate import run as evaluate
    from components.evaluate.config import EvaluateConfig, default_config_path

    source = args.config_path or default_config_path()
    data = read_yaml(source)
    for item in args.overrides:
        key, sep, value = item.partition("=")
        if not sep:
            raise ConfigError(f"--set {item}: expected KEY=VALUE")
        set_override(data, key, yaml.safe_load(value))
    config = parse_config(data, EvaluateConfig, source)
    result = evaluate(args.model, args.data, args.out, config, baseline_uri=args.baseline)
    print(f"{'BLESSED' if result.blessed else 'NOT BLESSED'}: {result.blessing.reason}")
    print(f"report: {result.out_uri.rstrip('/')}/report.html")
    return 0
