"""`recap push --model URI --evaluation URI --serving URI --version V`: publish a blessed model.

Exit code 1 when the evaluation did not bless the model (nothing is copied), 2 for usage.
"""

from __future__ import annotations

import argparse

from components.common.config import parse_config
from components.push.serving import PushConfig
from components.push.serving import run as push


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, help="URI of the exported model")
    parser.add_argument("--evaluation", required=True, help="URI of its evaluation output (holds blessing.json)")
    parser.add_argument("--serving", required=True, help="serving URI: the model goes to <serving>/<version>/")
    parser.add_argument("--version", required=True, help="serving version, e.g. the pipeline run id")


def run(args: argparse.Namespace) -> int:
    config = parse_config({"version": args.version}, PushConfig, "recap push")
    print(push(args.model, args.evaluation, args.serving, config))
    return 0
