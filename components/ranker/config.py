"""The `model` section of the trainer's YAML: the Heavy Ranker's shape, as the original names it,
plus the sparse ID tables it left out. Training and every loader of an exported model read it.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from components.common.config import StrictModel


class BatchNormConfig(StrictModel):
    affine: bool = True
    momentum: float = Field(default=0.1, gt=0, le=1)


class MlpConfig(StrictModel):
    layer_sizes: list[int] = Field(min_length=1)
    batch_norm: BatchNormConfig | None = None
    dropout: float | None = Field(default=None, ge=0, lt=1)
    final_layer_activation: bool = False


class DoubleNormLogConfig(StrictModel):
    batch_norm: BatchNormConfig = BatchNormConfig(affine=True, momentum=0.01)
    clip_magnitude: float = Field(default=5.0, gt=0)
    layer_norm_epsilon: float = Field(default=0.0, ge=0)
    # Preprocess `truncate_and_slice`: keep the first n values (None keeps all the schema has).
    continuous_truncation: int | None = Field(default=None, ge=1)
    binary_truncation: int | None = Field(default=None, ge=0)


class MaskBlockConfig(StrictModel):
    aggregation_size: int = Field(ge=1)  # width of the mask's hidden layer
    output_size: int = Field(ge=1)
    input_layer_norm: bool = False


class MaskNetConfig(StrictModel):
    mask_blocks: list[MaskBlockConfig] = Field(min_length=1)
    use_parallel: bool = True  # parallel blocks (concatenated) or stacked (one after another)
    mlp: MlpConfig | None = None


class BackboneConfig(StrictModel):
    """Exactly one of mask_net / mlp."""

    mask_net: MaskNetConfig | None = None
    mlp: MlpConfig | None = None

    @model_validator(mode="after")
    def _one_kind(self) -> BackboneConfig:
        if (self.mask_net is None) == (self.mlp is None):
            raise ValueError("set exactly one of mask_net, mlp")
        return self


class AffineMapConfig(StrictModel):
    scale: float = 1.0
    bias: float = 0.0


class TaskModelConfig(StrictModel):
    """Per-task overrides of the default tower."""

    tower: MlpConfig | None = None
    affine_map: AffineMapConfig | None = None
    pos_weight: float = Field(default=1.0, gt=0)  # BCE weight of positives for this task


class TableConfig(StrictModel):
    feature: str  # schema ID feature, e.g. meta__user_id
    num_embeddings: int = Field(ge=1)  # raw ids are hashed into this many rows
    embedding_dim: int = Field(ge=1)


class SparseConfig(StrictModel):
    tables: list[TableConfig] = Field(default_factory=list)
    # Sharding types the DMP planner may choose from.
    sharding_types: list[Literal["table_wise", "row_wise", "column_wise", "table_row_wise"]] = [
        "table_wise", "row_wise", "column_wise",
    ]


class ModelConfig(StrictModel):
    featurization: DoubleNormLogConfig = DoubleNormLogConfig()
    twhin_layer_norm: bool = True
    backbone: BackboneConfig
    multi_task_type: Literal["share_all", "share_partial", "share_none"] = "share_all"
    tower: MlpConfig = MlpConfig(
        layer_sizes=[256, 128, 1], batch_norm=BatchNormConfig(affine=False, momentum=0.1)
    )
    tasks: dict[str, TaskModelConfig] = Field(default_factory=dict)
    sparse: SparseConfig = SparseConfig()
    # true: batch norm statistics over the global batch (all ranks), so 1..N ranks train alike,
    # at the cost of one small all_reduce per batch-norm layer in forward and one in backward
    # (42 per step for prod). false: each rank's own rows, as the original trained (torch's
    # BatchNorm1d; running statistics differ per rank and one rank's copy is checkpointed and exported).
    sync_batch_norm: bool = True
    # "label_rate": a fresh model's output biases start at each task's (pos-weighted) log-odds in
    # the first global batch, so early steps learn features instead of the base rate.
    output_bias_init: Literal["zero", "label_rate"] = "label_rate"

