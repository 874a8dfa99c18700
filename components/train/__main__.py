"""Trainer entry, run by torchrun on every rank: `python -m components.train --config_path=...`.

Parses the trainer's flags (components.trainer_command.flags), loads the config with them and
calls the step, `components.train.trainer.run`. An error ends the rank with one line and the
exit code of its kind (1 data, 2 config), handed to the launcher when it asks
(components.trainer_command.rank_errors); the traceback only with RECAP_LOG_LEVEL=DEBUG.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import traceback
import warnings
from collections.abc import Sequence

from components.common.errors import EXIT_CHECK_FAILED, RecapError
from components.common.logs import setup_logging
from components.train.config import load_train_config
from components.trainer_command import rank_errors
from components.trainer_command.flags import add_trainer_arguments, config_overrides, flag_values


def quiet_libraries(verbose: bool = False) -> None:
    """One log format and our INFO lines only: torchrec/fbgemm install their own root handler
    at import and log every TBE's arguments; their warnings about deprecated internals are noise.
    """
    root = logging.getLogger()
    for handler in list(root.handlers):
        if not getattr(handler, "_recap", False):
            root.removeHandler(handler)
    if verbose:
        return
    root.setLevel(logging.WARNING)
    logging.getLogger("components").setLevel(logging.INFO)
    for module in ("torch", "torchrec", "fbgemm_gpu"):
        warnings.filterwarnings("ignore", category=FutureWarning, module=module)
        warnings.filterwarnings("ignore", category=UserWarning, module=module)
    logging.getLogger("torchrec").setLevel(logging.ERROR)  # planner stats tables, topology advice


def overrides_from(args: argparse.Namespace) -> dict[str, object]:
    """The set flags as {dotted config field: value}."""
    return config_overrides(flag_values(args))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m components.train", description=__doc__.splitlines()[0])
    add_trainer_arguments(parser)
    args = parser.parse_args(argv)
    setup_logging()
    from components.train.trainer import run

    quiet_libraries(verbose=args.debug_loop)
    try:
        config = load_train_config(args.config_path, overrides_from(args))
        validation = config.validation_data.inputs if config.validation_data else None
        run(config.train_data.inputs, validation, config.training.save_dir, config, debug_loop=args.debug_loop)
        return 0
    except RecapError as exc:
        return _fail(exc.exit_code, str(exc))
    except Exception as exc:  # a bug or an unmapped library error: still one line, the traceback at DEBUG
        return _fail(EXIT_CHECK_FAILED, f"unexpected {type(exc).__name__}: {exc} (RECAP_LOG_LEVEL=DEBUG "
                     "shows the traceback)", unexpected=True)


def _fail(exit_code: int, message: str, unexpected: bool = False) -> int:
    debug = os.environ.get("RECAP_LOG_LEVEL", "").upper() == "DEBUG"
    if debug:
        traceback.print_exc()
    if not rank_errors.report(exit_code, message, unexpected) or debug:
        print(f"components.train: error: {message}", file=sys.stderr, flush=True)
    return exit_code


def leave(code: int) -> None:
    """Exit with `code`; a failed rank skips the interpreter's teardown: with TensorFlow's and the
    process group's native threads still up it takes 2-3 s, which torchrun, the launcher and the
    DAG would all wait for before reporting a one-line error that is already written."""
    if code:
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    sys.exit(code)


if __name__ == "__main__":
    leave(main())
