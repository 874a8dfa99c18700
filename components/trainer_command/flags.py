"""The trainer's flags, declared once: each overrides one field of the trainer YAML.

The original's style is kept (`--config_path=...`, underscores); each flag also accepts its
dashed spelling (`--config-path`).
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from dataclasses import dataclass

from components.common.errors import ConfigError


@dataclass(frozen=True)
class TrainerFlag:
    name: str  # --<name>
    config_field: str  # the dotted field of the trainer YAML it overrides
    type: type
    help: str


CONFIG_PATH = "config_path"
DEBUG_LOOP = "debug_loop"
OVERRIDES = (
    TrainerFlag("train_data", "train_data.inputs", str, "training split: a converted directory with _MANIFEST.json"),
    TrainerFlag("validation_data", "validation_data.inputs", str, "validation split, evaluated during training"),
    TrainerFlag("save_dir", "training.save_dir", str, "checkpoints and TensorBoard logs (local or gs://)"),
    TrainerFlag("model_dir", "training.model_dir", str, "the exported model (default: <save_dir>/model)"),
    TrainerFlag("num_train_steps", "training.num_train_steps", int, "optimizer steps to train"),
    TrainerFlag("initial_checkpoint_dir", "training.initial_checkpoint_dir", str,
                "warm start from a step_<n> checkpoint (or the newest in a save_dir)"),
    TrainerFlag("global_batch_size", "train_data.global_batch_size", int, "examples per step over all ranks"),
    TrainerFlag("data_service_dispatcher", "train_data.data_service_dispatcher", str,
                "grpc://host:port: read the training data through this tf.data service dispatcher"),
    TrainerFlag("data_service_connect_timeout_s", "train_data.data_service_connect_timeout_s", float,
                "seconds to wait for the dispatcher before failing with its address"),
)
BY_NAME = {flag.name: flag for flag in OVERRIDES}


def add_trainer_arguments(parser: argparse.ArgumentParser | argparse._ArgumentGroup,
                          config_required: bool = True) -> None:
    """The trainer's flags on `parser` (the trainer itself, `recap train`, `recap launch`)."""
    parser.add_argument(f"--{CONFIG_PATH}", "--config-path", dest=CONFIG_PATH, required=config_required,
                        help="trainer YAML (e.g. configs/local.yaml), local or gs://")
    parser.add_argument(f"--{DEBUG_LOOP}", "--debug-loop", dest=DEBUG_LOOP, action="store_true",
                        help="slow, verbose loop: every step logged with gradient norms, anomaly detection")
    for flag in OVERRIDES:
        parser.add_argument(f"--{flag.name}", f"--{flag.name.replace('_', '-')}", dest=flag.name, type=flag.type,
                            default=None, help=f"{flag.help} (overrides {flag.config_field})")


def flag_values(args: argparse.Namespace | Mapping[str, object]) -> dict[str, object]:
    """The override flags that are set, by flag name (what a launcher forwards)."""
    get = args.get if isinstance(args, Mapping) else lambda name: getattr(args, name, None)
    return {flag.name: get(flag.name) for flag in OVERRIDES if get(flag.name) is not None}


def config_overrides(values: Mapping[str, object]) -> dict[str, object]:
    """Flag values -> {dotted config field: value}, as the trainer applies them to its YAML."""
    unknown = sorted(set(values) - set(BY_NAME))
    if unknown:
        raise ConfigError(f"not a trainer flag: {', '.join(unknown)} (known: {', '.join(BY_NAME)})")
    return {BY_NAME[name].config_field: value for name, value in values.items() if value is not None}


def flag_arguments(values: Mapping[str, object]) -> list[str]:
    """Flag values -> `--name=value` arguments, in declaration order; unknown names are errors."""
    config_overrides(values)  # checks the names
    return [f"--{flag.name}={values[flag.name]}" for flag in OVERRIDES if values.get(flag.name) is not None]


@dataclass(frozen=True)
class TrainerArgs:
    """What a launcher hands to the trainer: its config and flag values, by flag name."""

    config_path: str
    flags: tuple[tuple[str, str], ...] = ()  # (name, value) of flags in OVERRIDES, in that order
    debug_loop: bool = False

    def __post_init__(self) -> None:
        config_overrides(dict(self.flags))  # an unknown flag fails here, not in the training pod

    @classmethod
    def of(cls, config_path: str, debug_loop: bool = False, **values: object) -> TrainerArgs:
        """From flag values as keywords (`train_data=...`); None values are left out."""
        config_overrides(values)
        ordered = tuple((flag.name, str(values[flag.name])) for flag in OVERRIDES if values.get(flag.name) is not None)
        return cls(config_path, ordered, debug_loop)

    def value(self, name: str) -> str | None:
        return dict(self.flags).get(name)

    def with_flag(self, name: str, value: object) -> TrainerArgs:
        """A copy with flag `name` set to `value` (a launcher's own setting, e.g. the data service)."""
        return TrainerArgs.of(self.config_path, self.debug_loop, **(dict(self.flags) | {name: value}))
