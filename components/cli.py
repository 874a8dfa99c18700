"""`recap`: one command with a subcommand per pipeline step.

Each step's arguments and handler live beside its code in `<package>/cli.py` as
`add_arguments(parser)` and `run(args) -> int`; this module only routes and maps errors
to exit codes (0 ok, 1 failed check, 2 usage or config error) in one place. Step modules
are imported lazily so `recap --help` stays fast and a step that has not landed yet says so.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence
from dataclasses import dataclass

from components.common.errors import ConfigError, NotYetAvailable, RecapError
from components.common.logs import setup_logging


@dataclass(frozen=True)
class Command:
    path: tuple[str, ...]  # ("data", "generate")
    module: str
    help: str


COMMANDS = (
    Command(("data", "generate"), "components.datagen.cli", "write synthetic raw Parquet with a planted signal, and its oracle"),
    Command(("validate",), "components.validate.cli", "statistics, anomalies, drift and an HTML report for raw Parquet"),
    Command(("convert",), "components.convert.cli", "raw Parquet -> gzip TFRecord shards (segdense layout) with manifests"),
    Command(("train",), "components.train.cli", "train the Heavy Ranker under torchrun with TorchRec sharding"),
    Command(("evaluate",), "components.evaluate.cli", "metrics, report and blessing for an exported model"),
    Command(("launch",), "components.launch.cli", "start training as a Kubeflow PyTorchJob or as local torchrun processes"),
    Command(("pipeline", "compile"), "pipeline.cli", "compile the KFP v2 DAG to YAML"),
    Command(("pipeline", "run"), "pipeline.cli", "run the whole DAG on this machine through kfp.local"),
    Command(("pipeline", "submit"), "pipeline.cli", "submit the DAG to a Kubeflow Pipelines host"),
)


def _load(command: Command):
    try:
        return importlib.import_module(command.module)
    except ModuleNotFoundError as exc:
        if exc.name and command.module.startswith(exc.name):
            return None
        raise


def _add_common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--log-level", default=None, help="DEBUG, INFO (default), WARNING")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="recap",
        description="Train Twitter's Heavy Ranker as a Kubeflow pipeline: one subcommand per step.",
    )
    groups: dict[str, argparse._SubParsersAction] = {}
    top = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for command in COMMANDS:
        subparsers = top
        for depth, word in enumerate(command.path[:-1]):
            key = " ".join(command.path[: depth + 1])
            if key not in groups:
                group_parser = subparsers.add_parser(word, help=f"{word} subcommands")
                groups[key] = group_parser.add_subparsers(dest=f"{word}_command", metavar="SUBCOMMAND", required=True)
            subparsers = groups[key]
        sub = subparsers.add_parser(command.path[-1], help=command.help, description=command.help)
        _add_common(sub)
        module = _load(command)
        if module is None:
            sub.set_defaults(_command=command, _handler=None)
            sub.add_argument("--config_path", default=None, help=argparse.SUPPRESS)
            sub.add_argument("rest", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
            continue
        adder = getattr(module, f"add_{command.path[-1]}_arguments", None) or module.add_arguments
        adder(sub)
        handler = getattr(module, f"run_{command.path[-1]}", None) or module.run
        sub.set_defaults(_command=command, _handler=handler)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    setup_logging(args.log_level)
    name = " ".join(args._command.path)
    try:
        config_path = getattr(args, "config_path", None)
        if config_path:
            from components.common import storage

            if not storage.exists(config_path):
                raise ConfigError(f"{config_path}: config file not found")
        if args._handler is None:
            raise NotYetAvailable(f"`recap {name}` is not available yet in this release")
        return int(args._handler(args) or 0)
    except RecapError as exc:
        print(f"recap {name}: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print(f"recap {name}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
