"""The trainer's YAML config: the original's five sections (training, model, train_data,
validation_data, optimizer) as strict pydantic models. The `model` section is the ranker's own
(components.ranker.config), so a model can be loaded without anything of training.

A typo or a task name the schema does not know fails at load time with the field path.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator

from components.common.config import StrictModel, parse_config, read_yaml, set_override
from components.common.errors import ConfigError
from components.common.schema import Schema, load_schema
from components.ranker.config import ModelConfig
from components.train.constants import MODEL_SUBDIR
from components.trainer_command.launch_shape import per_rank_batch

# --------------------------------------------------------------------------- training


class TrainingConfig(StrictModel):
    save_dir: str = "runs/local/train"
    model_dir: str | None = None  # default: <save_dir>/model
    num_train_steps: int = Field(default=100, ge=1)
    initial_checkpoint_dir: str | None = None  # warm start: a step_<n> dir (or a save_dir)
    checkpoint_every_n: int = Field(default=50, ge=1)
    checkpoint_max_to_keep: int = Field(default=3, ge=1)
    train_log_every_n: int = Field(default=10, ge=1)  # also when the losses are copied to the host
    # Every rank reads this many steps of batches ahead and checks with one collective that all
    # ranks have them: no per-step collective or host sync (ranks.CheckedBatches).
    data_check_every_n: int = Field(default=8, ge=1)
    eval_every_n: int = Field(default=50, ge=1)
    num_eval_steps: int = Field(default=4, ge=0)
    gradient_accumulation: int = Field(default=1, ge=1)
    seed: int = 0
    # bf16 autocast of the forward pass. None (auto): on for GPU training, off on CPU (where it
    # pays only with AVX512-BF16 or AMX; set it true there).
    bf16_autocast: bool | None = None
    # TF32 for the fp32 matmuls and convolutions left on NVIDIA GPUs (Ampere and later), as the
    # original trainer did. None (auto): on for GPU training; no effect on CPU.
    tf32: bool | None = None
    # With bf16_autocast: Linear layers compute with bf16 weight copies that the optimizer keeps
    # up to date, instead of casting every weight every step (same numbers, faster on a CPU;
    # precision.py). None (auto): on for CPU training only; on a GPU the casts cost little at HBM
    # speed, the copies split the fused Adam into many launches, and on several GPUs their
    # gradient all-reduce would no longer overlap the backward pass. Never used with
    # gradient_accumulation > 1, optimizer.fused_adam: false, or --debug_loop.
    bf16_weight_copies: bool | None = None
    # TorchRec's TrainPipelineSparseDist drives the steps: while batch i trains, batch i+1's
    # embedding input exchange and batch i+2's copy to the GPU run on side CUDA streams. None
    # (auto): on for GPU training. On CPU (set it true) it runs the same stages in order with
    # nothing to overlap (there are no streams), for tests. Needs gradient_accumulation: 1 and
    # is never used with --debug_loop.
    train_pipeline: bool | None = None
    num_threads: int | None = Field(default=None, ge=1)  # torch intra-op threads per process
    tensorboard: bool = True


# --------------------------------------------------------------------------- data


class DataConfig(StrictModel):
    inputs: str  # a split directory with _MANIFEST.json (local or gs://)
    seg_dense_schema: str = "local"  # schema variant name or path
    global_batch_size: int = Field(default=128, ge=1)  # examples per step over all ranks
    # Examples per step on each rank (per GPU). When set, the global batch is this times the world
    # size, so any number of GPUs works; global_batch_size must then be left out.
    per_rank_batch_size: int | None = Field(default=None, ge=1)
    shuffle: bool = True
    repeat: bool = True
    drop_remainder: bool = True
    skip_corrupt: bool = False
    cache_dir: str | None = None
    num_parallel_reads: int = Field(default=4, ge=1)
    prefetch: int = Field(default=2, ge=0)
    # grpc://host:port of a tf.data service dispatcher: the training data is read by its dataset
    # workers instead of in the trainer (docs/data-service.md). Ignored for validation_data.
    data_service_dispatcher: str | None = None
    data_service_connect_timeout_s: float = Field(default=60.0, gt=0)

    @model_validator(mode="after")
    def _one_batch_size(self) -> DataConfig:
        if self.per_rank_batch_size is not None and "global_batch_size" in self.model_fields_set:
            raise ValueError("set either global_batch_size (over all ranks) or per_rank_batch_size, not both")
        return self

    def rank_batch_size(self, world_size: int, where: str) -> int:
        """Examples per step on one rank of `world_size`; ConfigError when the global batch does not divide."""
        return per_rank_batch(self.global_batch_size, self.per_rank_batch_size, world_size, where)

    def global_batch(self, world_size: int) -> int:
        """Examples per step over all `world_size` ranks."""
        if self.per_rank_batch_size is not None:
            return self.per_rank_batch_size * world_size
        return self.global_batch_size


# --------------------------------------------------------------------------- optimizer


class ConstantSchedule(StrictModel):
    learning_rate: float = Field(gt=0)


class LinearRampToConstantSchedule(StrictModel):
    learning_rate: float = Field(gt=0)
    num_ramp_steps: int = Field(ge=1)


class LinearRampToCosineSchedule(StrictModel):
    learning_rate: float = Field(gt=0)
    num_ramp_steps: int = Field(ge=0)
    final_learning_rate: float = Field(ge=0)
    final_num_steps: int = Field(ge=1)


class PiecewiseConstantSchedule(StrictModel):
    learning_rate_boundaries: list[int]
    learning_rate_values: list[float]

    @model_validator(mode="after")
    def _lengths(self) -> PiecewiseConstantSchedule:
        if len(self.learning_rate_values) != len(self.learning_rate_boundaries) + 1:
            raise ValueError("learning_rate_values needs one more entry than learning_rate_boundaries")
        if self.learning_rate_boundaries != sorted(self.learning_rate_boundaries):
            raise ValueError("learning_rate_boundaries must be increasing")
        return self


class LearningRateConfig(StrictModel):
    """Exactly one schedule, named by its key as in the original's YAML."""

    constant: ConstantSchedule | None = None
    linear_ramp_to_constant: LinearRampToConstantSchedule | None = None
    linear_ramp_to_cosine: LinearRampToCosineSchedule | None = None
    piecewise_constant: PiecewiseConstantSchedule | None = None

    @model_validator(mode="after")
    def _one_schedule(self) -> LearningRateConfig:
        chosen = [k for k, v in self.__dict__.items() if v is not None]
        if len(chosen) != 1:
            raise ValueError(f"set exactly one schedule, got {chosen or 'none'}")
        return self


class AdamConfig(StrictModel):
    beta_1: float = 0.95
    beta_2: float = 0.999
    epsilon: float = 1e-7


class MultiTaskLearningRates(StrictModel):
    backbone_learning_rate: LearningRateConfig
    tower_learning_rates: dict[str, LearningRateConfig] = Field(default_factory=dict)
    default_tower_learning_rate: LearningRateConfig | None = None  # towers not listed above


class EmbeddingOptimizerConfig(StrictModel):
    """TorchRec fused optimizer of the embedding tables (applied inside the backward pass).

    On CPU, fbgemm supports exact_rowwise_adagrad, exact_adagrad and exact_sgd; adam needs a GPU.
    """

    algorithm: Literal["rowwise_adagrad", "adagrad", "sgd", "adam"] = "rowwise_adagrad"
    learning_rate: float = Field(default=0.01, gt=0)
    epsilon: float = 1e-8


class OptimizerConfig(StrictModel):
    adam: AdamConfig = AdamConfig()
    multi_task_learning_rates: MultiTaskLearningRates
    embedding: EmbeddingOptimizerConfig = EmbeddingOptimizerConfig()
    fused_adam: bool = True  # torch's fused Adam kernel (one pass over memory)


# --------------------------------------------------------------------------- all


class RecapConfig(StrictModel):
    training: TrainingConfig = TrainingConfig()
    model: ModelConfig
    train_data: DataConfig
    validation_data: DataConfig | None = None
    optimizer: OptimizerConfig

    @model_validator(mode="after")
    def _same_schema(self) -> RecapConfig:
        if self.validation_data and self.validation_data.seg_dense_schema != self.train_data.seg_dense_schema:
            raise ValueError("validation_data.seg_dense_schema must equal train_data.seg_dense_schema")
        return self

    @property
    def model_dir(self) -> str:
        from components.common import storage

        return self.training.model_dir or storage.join(self.training.save_dir, MODEL_SUBDIR)

    def load_schema(self) -> Schema:
        return load_schema(self.train_data.seg_dense_schema)


def check_against_schema(config: RecapConfig, schema: Schema, source: str = "<config>") -> None:
    """Names in the config that refer to the data contract must exist in it."""
    tasks = set(schema.task_names)
    ids = {f.name for f in schema.ids}
    rates = config.optimizer.multi_task_learning_rates
    for where, names in (("model.tasks", config.model.tasks), ("optimizer.multi_task_learning_rates.tower_learning_rates", rates.tower_learning_rates)):
        for name in names:
            if name not in tasks:
                raise ConfigError(f"{source}: {where}.{name}: not a task of schema {schema.name} ({', '.join(sorted(tasks))})")
    missing = [t for t in schema.task_names if t not in rates.tower_learning_rates]
    if missing and rates.default_tower_learning_rate is None:
        raise ConfigError(
            f"{source}: optimizer.multi_task_learning_rates: no tower_learning_rates for {', '.join(missing)} "
            "and no default_tower_learning_rate"
        )
    seen = set()
    for index, table in enumerate(config.model.sparse.tables):
        if table.feature not in ids:
            raise ConfigError(f"{source}: model.sparse.tables.{index}.feature: {table.feature!r} is not an ID feature "
                              f"of schema {schema.name} ({', '.join(sorted(ids))})")
        if table.feature in seen:
            raise ConfigError(f"{source}: model.sparse.tables.{index}.feature: {table.feature} has two tables")
        seen.add(table.feature)
    feat = config.model.featurization
    cont, binary = schema.group("continuous").length, schema.group("binary").length
    if feat.continuous_truncation and feat.continuous_truncation > cont:
        raise ConfigError(f"{source}: model.featurization.continuous_truncation: {feat.continuous_truncation} "
                          f"> {cont} continuous values in schema {schema.name}")
    if feat.binary_truncation and feat.binary_truncation > binary:
        raise ConfigError(f"{source}: model.featurization.binary_truncation: {feat.binary_truncation} "
                          f"> {binary} binary values in schema {schema.name}")


def apply_overrides(data: dict[str, Any], overrides: dict[str, Any] | None) -> dict[str, Any]:
    """Set `dotted.path: value` overrides (the trainer's flags, a run's URIs) in raw config data.

    A validation split given to a config without a `validation_data` section gets one: the
    training data's settings, unshuffled. A global batch size given replaces a per-rank one.
    """
    for key, value in (overrides or {}).items():
        if value is None:
            continue
        if key == "validation_data.inputs" and not data.get("validation_data"):
            train = dict(data.get("train_data") or {})
            data["validation_data"] = {k: v for k, v in train.items() if k != "inputs"} | {"shuffle": False}
        if key.endswith(".global_batch_size"):  # a flag's global batch replaces a per-rank one
            (data.get(key.split(".")[0]) or {}).pop("per_rank_batch_size", None)
        set_override(data, key, value)
    return data


def validated(data: dict[str, Any], source: str) -> RecapConfig:
    config = parse_config(data, RecapConfig, source)
    check_against_schema(config, config.load_schema(), source)
    return config


def load_train_config(path: str, overrides: dict[str, Any] | None = None) -> RecapConfig:
    """Load the YAML, apply `dotted.path=value` overrides, validate against the schema."""
    return validated(apply_overrides(read_yaml(path), overrides), path)


def with_overrides(config: RecapConfig, overrides: dict[str, Any], source: str = "<config>") -> RecapConfig:
    """A copy of `config` with `dotted.path=value` overrides, validated like a loaded file."""
    return validated(apply_overrides(config.model_dump(mode="json"), overrides), source)


def config_to_yaml(config: RecapConfig) -> str:
    import yaml

    return yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False)
