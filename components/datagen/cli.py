"""`recap data generate`: thin wrapper over components.datagen.generate."""

from __future__ import annotations

import argparse
import json

from components.datagen.generate import generate


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--schema", default="local", help="schema variant (local, prod) or a schema YAML path")
    parser.add_argument("--rows", type=int, required=True, help="total rows over all files")
    parser.add_argument("--files", type=int, default=1, help="number of Parquet files")
    parser.add_argument("--out", required=True, help="output directory: local path or gs://bucket/prefix")
    parser.add_argument("--seed", type=int, default=0, help="sampling seed (the hidden world is fixed)")
    parser.add_argument("--shift", type=float, default=0.0,
                        help="move the feature and label distributions (0 = reference); for drift demos")
    parser.add_argument("--row-group-rows", type=int, default=None, help="rows per Parquet row group (auto: ~32 MB)")


def run(args: argparse.Namespace) -> int:
    result = generate(args.schema, args.out, rows=args.rows, files=args.files, seed=args.seed,
                      shift=args.shift, row_group_rows=args.row_group_rows)
    summary = {name: {k: task[k] for k in ("positive_rate", "auroc")} for name, task in result.oracle["tasks"].items()}
    print(json.dumps({"out": result.out_uri, "rows": result.rows, "files": len(result.files),
                      "oracle": summary}, indent=2))
    return 0
