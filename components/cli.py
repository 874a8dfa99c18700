"""`recap`: one command with a subcommand per pipeline step.

Each step's arguments and handler live beside its code in `<package>/cli.py` as
`add_arguments(parser)` and `run(args) -> int`; this module only routes and maps errors
to exit codes (0 ok, 1 failed check, 2 usage or config error) in one place. Only the chosen
step's module is imported: `recap --help` stays fast, and each image needs only its own
step's dependencies (the validate image has no torch).

The steps of `components` are listed here; layers above (the `pipeline` package) add their
commands through the `recap.commands` entry point group in pyproject.toml, each entry a
`Command`, so this module never names them.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import metadata

from components.common.errors import EXIT_CHECK_FAILED, ConfigError, MissingDependency, RecapError
from components.common.logs import setup_logging


@dataclass(frozen=True)
class Command:
    path: tuple[str, ...]  # ("data", "generate")
    module: str
    help: str
    extra: str  # the pyproject extra that carries this step's dependencies
    image: str  # the container image that runs it


STEPS = (
    Command(("data", "generate"), "components.datagen.cli", "write synthetic raw Parquet with a planted signal, and its oracle", "validate", "recap-validate"),
    Command(("validate",), "components.validate.cli", "statistics, anomalies, drift and an HTML report for raw Parquet", "validate", "recap-validate"),
    Command(("convert",), "components.convert.cli", "raw Parquet -> gzip TFRecord shards (segdense layout) with manifests", "convert", "recap-convert"),
    Command(("train",), "components.train.cli", "train the Heavy Ranker under torchrun with TorchRec sharding", "train", "recap-train"),
    Command(("data-service", "dispatcher"), "components.data_service.cli", "run a tf.data service dispatcher (training input off the trainer nodes)", "train", "recap-train"),
    Command(("data-service", "worker"), "components.data_service.cli", "run a tf.data service dataset worker", "train", "recap-train"),
    Command(("evaluate",), "components.evaluate.cli", "metrics, report and blessing for an exported model", "evaluate", "recap-evaluate"),
    Command(("push",), "components.push.cli", "publish a blessed model to the serving location", "pipeline", "recap-launch"),
    Command(("launch",), "components.launch.cli", "start training as a Kubeflow PyTorchJob or as local torchrun processes", "pipeline", "recap-launch"),
)
ENTRY_POINT_GROUP = "recap.commands"
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")


def registered_commands() -> tuple[Command, ...]:
    """Commands of the layers above, from the `recap.commands` entry points, in name order."""
    found = sorted(metadata.entry_points(group=ENTRY_POINT_GROUP), key=lambda entry: entry.name)
    commands = tuple(entry.load() for entry in found)
    for entry, command in zip(found, commands, strict=True):
        if not isinstance(command, Command):
            raise TypeError(f"entry point {entry.name} = {entry.value} is not a components.cli.Command")
    return commands


def all_commands() -> tuple[Command, ...]:
    return STEPS + registered_commands()


def _attach(sub: argparse.ArgumentParser, command: Command) -> None:
    """Import a step's CLI module and add its arguments and handler to `sub`.

    A missing third-party package (torch in a CPU image) becomes a one-line usage error.
    """
    try:
        module = importlib.import_module(command.module)
        adder = getattr(module, f"add_{command.path[-1]}_arguments", None) or module.add_arguments
        adder(sub)
    except ModuleNotFoundError as exc:
        if not exc.name or exc.name.split(".")[0] in ("components", command.module.split(".")[0]):
            raise  # our own code is broken: not a missing dependency
        raise MissingDependency(
            f"`recap {' '.join(command.path)}` needs the Python package {exc.name!r}, which is not "
            f"installed here (pip install 'recap-pipeline[{command.extra}]', or use the {command.image} image)"
        ) from exc
    sub.set_defaults(_handler=getattr(module, f"run_{command.path[-1]}", None) or module.run)


def _selected(argv: Sequence[str], commands: Sequence[Command]) -> Command | None:
    """The command named by the leading words of argv, if any."""
    words = [a for a in argv if not a.startswith("-")]
    for command in commands:
        if tuple(words[: len(command.path)]) == command.path:
            return command
    return None


def build_parser(argv: Sequence[str] | None = None) -> argparse.ArgumentParser:
    """The `recap` parser. Given argv, only the chosen step's module is imported (so an image
    without torch can run `recap validate`); without argv, every step is loaded (docs, tests)."""
    parser = argparse.ArgumentParser(
        prog="recap",
        description="Train Twitter's Heavy Ranker as a Kubeflow pipeline: one subcommand per step.",
    )
    commands = all_commands()
    chosen = _selected(argv, commands) if argv is not None else None
    groups: dict[str, argparse._SubParsersAction] = {}
    top = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for command in commands:
        subparsers = top
        for depth, word in enumerate(command.path[:-1]):
            key = " ".join(command.path[: depth + 1])
            if key not in groups:
                group_parser = subparsers.add_parser(word, help=f"{word} subcommands")
                groups[key] = group_parser.add_subparsers(dest=f"{word}_command", metavar="SUBCOMMAND", required=True)
            subparsers = groups[key]
        sub = subparsers.add_parser(command.path[-1], help=command.help, description=command.help)
        sub.add_argument("--log-level", type=str.upper, choices=LOG_LEVELS, default=None,
                         help="DEBUG, INFO (default), WARNING, ERROR")
        sub.set_defaults(_command=command, _handler=None)
        if argv is not None and command != chosen:
            continue
        _attach(sub, command)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        parser = build_parser(argv)
    except MissingDependency as exc:
        print(f"recap: error: {exc}", file=sys.stderr)
        return exc.exit_code
    args = parser.parse_args(argv)
    setup_logging(args.log_level)
    name = " ".join(args._command.path)
    try:
        config_path = getattr(args, "config_path", None)
        # `launch --backend kubernetes`: the trainer reads the config inside the train image.
        if config_path and getattr(args, "backend", None) != "kubernetes":
            from components.common import storage

            if not storage.exists(config_path):
                raise ConfigError(f"{config_path}: config file not found")
        return int(args._handler(args) or 0)
    except RecapError as exc:
        logging.getLogger("recap").debug("traceback of the error below", exc_info=True)
        print(f"recap {name}: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except Exception as exc:  # a bug or an unmapped library error: one line, the traceback at DEBUG
        if logging.getLogger().isEnabledFor(logging.DEBUG):
            raise
        print(f"recap {name}: error: unexpected {type(exc).__name__}: {exc} (--log-level DEBUG shows the "
              "traceback)", file=sys.stderr)
        return EXIT_CHECK_FAILED
    except KeyboardInterrupt:
        print(f"recap {name}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # `python -m components.cli`: run the imported module, whose Command the entry points use
    from components.cli import main as recap_main

    sys.exit(recap_main())
