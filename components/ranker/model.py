"""The Heavy Ranker, in the order docs/model.md describes it.

1. double-norm-log featurization of continuous values, binary values appended, LayerNorm;
2. one LayerNorm per TwHIN embedding;
   (+) sparse ID features (user, author, tweet) hashed into TorchRec embedding tables whose
       pooled outputs join the dense input: the part the open-source original left out;
3. backbone: parallel MaskNet + MLP (or stacked MaskNet, or a plain MLP), shared across
   tasks (share_all), shared plus one per task (share_partial), or one per task (share_none);
4. one tower per task;
5. optional affine map per logit, sigmoid, numeric calibration undoing downsampling.
"""

from __future__ import annotations

import torch
from torch import nn
from torchrec import EmbeddingBagCollection, EmbeddingBagConfig, KeyedJaggedTensor

from components.common.schema import Schema
from components.ranker.config import BackboneConfig, ModelConfig
from components.ranker.layers import MaskNet, Mlp, batch_norm, double_norm_log
from components.records.batch import RecapBatch, finalize64, hash_ids  # noqa: F401 (re-exported)


def table_name(feature: str) -> str:
    return f"t_{feature}"


class DoubleNormLog(nn.Module):
    """Continuous: log-compress, batch norm, clip; then binary appended and a LayerNorm over both."""

    def __init__(self, config: ModelConfig, n_continuous: int, n_binary: int) -> None:
        super().__init__()
        feat = config.featurization
        self.n_continuous = feat.continuous_truncation or n_continuous
        self.n_binary = n_binary if feat.binary_truncation is None else feat.binary_truncation
        self.clip = feat.clip_magnitude
        self.batch_norm = batch_norm(self.n_continuous, feat.batch_norm, config.sync_batch_norm)
        self.out_features = self.n_continuous + self.n_binary
        self.layer_norm = nn.LayerNorm(self.out_features, eps=feat.layer_norm_epsilon)

    def forward(self, continuous: torch.Tensor, binary: torch.Tensor) -> torch.Tensor:
        x = double_norm_log(continuous[:, : self.n_continuous], self.batch_norm, self.clip)
        return self.layer_norm(torch.cat([x, binary[:, : self.n_binary].to(x.dtype)], dim=1))


class SparseIdFeatures(nn.Module):
    """One embedding table per ID feature; output the pooled embeddings, concatenated.

    Training feeds IDs already hashed to table rows (`records.batch.with_hashed_ids`, applied
    on the host before the batch reaches the device), so the tables read the batch's KJT as is
    and TorchRec's train pipeline can run their input exchange ahead of the forward pass. A
    model built for evaluation or serving (`hash_in_forward`, the default) takes raw IDs and
    hashes them here, with the same function.
    """

    def __init__(self, config: ModelConfig, device: torch.device | str = "cpu", hash_in_forward: bool = True) -> None:
        super().__init__()
        self.tables = list(config.sparse.tables)
        self.hash_in_forward = hash_in_forward
        self.out_features = sum(t.embedding_dim for t in self.tables)
        self.embedding_bags = EmbeddingBagCollection(
            tables=[
                EmbeddingBagConfig(name=table_name(t.feature), embedding_dim=t.embedding_dim,
                                   num_embeddings=t.num_embeddings, feature_names=[t.feature])
                for t in self.tables
            ],
            device=torch.device(device),
        )

    def id_tables(self) -> list[tuple[str, int]]:
        """(ID feature, rows) per table, in table order: what `with_hashed_ids` hashes to."""
        return [(t.feature, t.num_embeddings) for t in self.tables]

    def forward(self, ids: KeyedJaggedTensor) -> torch.Tensor:
        if not self.hash_in_forward:
            return self.embedding_bags(ids).values()
        by_feature = ids.to_dict()
        values, lengths = [], []
        for table in self.tables:
            jagged = by_feature[table.feature]
            values.append(hash_ids(jagged.values(), table.num_embeddings))
            lengths.append(jagged.lengths())
        hashed = KeyedJaggedTensor.from_lengths_sync(
            keys=[t.feature for t in self.tables], values=torch.cat(values), lengths=torch.cat(lengths)
        )
        return self.embedding_bags(hashed).values()


def build_backbone(in_features: int, config: BackboneConfig, sync_batch_norm: bool) -> nn.Module:
    if config.mask_net is not None:
        return MaskNet(in_features, config.mask_net, sync_batch_norm)
    return Mlp(in_features, config.mlp, sync_batch_norm)


class TaskBackbones(nn.ModuleDict):
    """One backbone per task (share_partial, share_none); `forward(x)` -> their outputs, in task order.

    A ModuleDict with a forward of its own, so TorchRec's train pipeline, which traces the
    model's forward with each child of the model as an opaque call, never traces into a layer.
    """

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return [backbone(x) for backbone in self.values()]


class TaskTowers(nn.ModuleDict):
    """One tower per task; `forward(shared, per_task)` -> logits [B, T] in task order (see TaskBackbones)."""

    def forward(self, shared: torch.Tensor | None, per_task: list[torch.Tensor] | None) -> torch.Tensor:
        logits = []
        for index, tower in enumerate(self.values()):
            features = [shared] if shared is not None else []
            if per_task is not None:
                features.append(per_task[index])
            logits.append(tower(features[0] if len(features) == 1 else torch.cat(features, dim=1)))
        return torch.cat(logits, dim=1)


class HeavyRanker(nn.Module):
    """Multi-task ranker: `model(batch)` -> {"logits", "probabilities", "calibrated_probabilities"}, each [B, T]."""

    def __init__(self, config: ModelConfig, schema: Schema, sparse_device: torch.device | str = "cpu",
                 hash_ids_in_forward: bool = True) -> None:
        super().__init__()
        self.tasks = list(schema.task_names)
        self.embedding_names = [f.name for f in schema.embeddings]
        self.featurize = DoubleNormLog(config, schema.group("continuous").length, schema.group("binary").length)
        width = self.featurize.out_features
        self.twhin_norms = nn.ModuleDict({
            spec.name: nn.LayerNorm(spec.length) if config.twhin_layer_norm else nn.Identity()
            for spec in schema.embeddings
        })
        width += sum(spec.length for spec in schema.embeddings)
        self.sparse = SparseIdFeatures(config, sparse_device, hash_ids_in_forward) if config.sparse.tables else None
        width += self.sparse.out_features if self.sparse else 0
        self.in_features = width

        sync = config.sync_batch_norm
        share = config.multi_task_type
        self.shared_backbone = build_backbone(width, config.backbone, sync) if share != "share_none" else None
        self.task_backbones = TaskBackbones(
            {task: build_backbone(width, config.backbone, sync) for task in self.tasks}
            if share != "share_all" else {}
        )
        tower_in = 0
        if self.shared_backbone is not None:
            tower_in += self.shared_backbone.out_features
        if self.task_backbones:
            tower_in += next(iter(self.task_backbones.values())).out_features
        towers, scales, biases = {}, [], []
        for task in self.tasks:
            override = config.tasks.get(task)
            tower_config = override.tower if override and override.tower else config.tower
            if tower_config.layer_sizes[-1] != 1:
                raise ValueError(f"model tower for {task}: last layer size must be 1")
            towers[task] = Mlp(tower_in, tower_config, sync)
            affine = override.affine_map if override else None
            scales.append(affine.scale if affine else 1.0)
            biases.append(affine.bias if affine else 0.0)
        self.towers = TaskTowers(towers)
        self.register_buffer("affine_scale", torch.tensor(scales), persistent=False)
        self.register_buffer("affine_bias", torch.tensor(biases), persistent=False)
        ratios = [task.calibration_ratio for task in schema.tasks]
        self.register_buffer("calibration_ratio", torch.tensor(ratios), persistent=False)

    def id_tables(self) -> list[tuple[str, int]]:
        """(ID feature, rows) of each embedding table; empty without sparse features."""
        return self.sparse.id_tables() if self.sparse is not None else []

    def dense_input(self, batch: RecapBatch) -> torch.Tensor:
        parts = [self.featurize(batch.continuous, batch.binary)]
        parts += [self.twhin_norms[name](batch.embeddings[name]) for name in self.embedding_names]
        if self.sparse is not None:
            parts.append(self.sparse(batch.sparse_features))
        return torch.cat([p.to(parts[0].dtype) for p in parts], dim=1)

    def forward(self, batch: RecapBatch) -> dict[str, torch.Tensor]:
        x = self.dense_input(batch)
        shared = self.shared_backbone(x) if self.shared_backbone is not None else None
        per_task = self.task_backbones(x) if self.task_backbones else None
        logits = self.towers(shared, per_task).float() * self.affine_scale + self.affine_bias
        probabilities = torch.sigmoid(logits)
        r = self.calibration_ratio
        calibrated = probabilities * r / (1 - probabilities + r * probabilities)
        return {"logits": logits, "probabilities": probabilities, "calibrated_probabilities": calibrated}

    @torch.no_grad()
    def set_output_bias(self, log_odds: torch.Tensor) -> None:
        """Make each task's logit start at `log_odds[t]` (through its affine map) for zero features."""
        for index, task in enumerate(self.tasks):
            last = [m for m in self.towers[task] if isinstance(m, nn.Linear)][-1]
            last.bias.fill_(float((log_odds[index] - self.affine_bias[index]) / self.affine_scale[index]))
