"""`recap convert`: raw Parquet -> TFRecord shards in `<out>/train` and `<out>/eval`."""

from __future__ import annotations

import argparse
import sys

from components.common.config import parse_config
from components.common.contract import load_thresholds
from components.common.schema import load_schema
from components.convert.convert import ConvertSettings
from components.convert.convert import run as convert


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--input", required=True, help="raw Parquet directory/prefix (local or gs://)")
    parser.add_argument("--schema", default="local", help="local | prod | path to a schema YAML")
    parser.add_argument("--out", required=True, help="output URI; writes <out>/train and <out>/eval")
    parser.add_argument("--eval-fraction", type=float, default=0.1, help="share of split keys sent to eval")
    parser.add_argument("--split-key", default="user_id", help="ID column hashed to pick the split")
    parser.add_argument("--shards", type=int, default=4, help="shards per split (>= training ranks)")
    parser.add_argument("--workers", type=int, default=None, help="processes (default: CPU count)")
    parser.add_argument("--compressor", choices=["auto", "isal", "zlib"], default="auto",
                        help="gzip implementation (auto: isal when installed, else zlib)")
    parser.add_argument("--skip-checks", action="store_true",
                        help="skip the contract's value checks (labels, binary values, IDs, NaN/inf): for input "
                        "that passed `recap validate` already; nulls, types and lengths are always checked")
    parser.add_argument("--validation-config", default=None,
                        help="validation config whose thresholds the checks use (default: configs/validation.yaml)")
    parser.add_argument("--compression-level", type=int, default=None, help="isal 0-3 (default 1), zlib 0-9 (default 6)")
    parser.add_argument("--layout", choices=["segdense", "packed"], default="segdense",
                        help="record layout: segdense (the original's, for interop) or packed (fast training reads)")
    parser.add_argument("--trainer-config", default=None,
                        help="packed: trainer YAML whose model truncation says which values to keep")
    parser.add_argument("--compression", choices=["auto", "gzip", "none"], default="auto",
                        help="shard compression (auto: gzip for segdense, none for packed)")


def run(args: argparse.Namespace) -> int:
    values = {
        "eval_fraction": args.eval_fraction, "split_key": args.split_key, "shards": args.shards,
        "compressor": args.compressor, "compression_level": args.compression_level, "progress_bar": sys.stderr.isatty(),
        "layout": args.layout, "trainer_config": args.trainer_config, "compression": args.compression,
    }
    thresholds = load_thresholds(args.validation_config)
    values.update(check_values=not args.skip_checks, max_non_finite_share=thresholds.max_non_finite_share,
                  severity=dict(thresholds.severity))
    if args.workers is not None:
        values["workers"] = args.workers
    settings = parse_config(values, ConvertSettings, "recap convert")
    result = convert(args.input, load_schema(args.schema), args.out, settings)
    for split, uri in result.manifest_uris.items():
        print(f"{split}: {result.records[split]} records in {len(result.shard_uris[split])} shards, {uri}")
    return 0
