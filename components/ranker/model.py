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
from components.records.batch import RecapBatch

# splitmix64's finalizer constants (0xbf58476d1ce4e5b9, 0x94d049bb133111eb) as signed int64.
_MIX1, _MIX2 = -4658895280553007687, -7723592293110705685


def _shift_right(x: torch.Tensor, bits: int) -> torch.Tensor:
    """Logical right shift of int64 (torch's >> is arithmetic)."""
    return (x >> bits) & ((1 << (64 - bits)) - 1)


def finalize64(x: torch.Tensor) -> torch.Tensor:
    """splitmix64's output mix in int64 ops, bit-identical to `components.common.hashing.finalize64`.

    Torch rather than numpy so hashing runs on the batch's device inside the model's forward.
    """
    x = x ^ _shift_right(x, 30)
    x = x * _MIX1  # wraps modulo 2**64
    x = x ^ _shift_right(x, 27)
    x = x * _MIX2
    return x ^ _shift_right(x, 31)


def hash_ids(ids: torch.Tensor, num_embeddings: int) -> torch.Tensor:
    """Map raw int64 IDs (any range, sign) to rows [0, num_embeddings) with splitmix64 mixing."""
    return torch.remainder(finalize64(ids), num_embeddings)


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
    """Hash raw IDs into one table per ID feature; output the pooled embeddings, concatenated."""

    def __init__(self, config: ModelConfig, device: torch.device | str = "cpu") -> None:
        super().__init__()
        self.tables = list(config.sparse.tables)
        self.out_features = sum(t.embedding_dim for t in self.tables)
        self.embedding_bags = EmbeddingBagCollection(
            tables=[
                EmbeddingBagConfig(name=table_name(t.feature), embedding_dim=t.embedding_dim,
                                   num_embeddings=t.num_embeddings, feature_names=[t.feature])
                for t in self.tables
            ],
            device=torch.device(device),
        )

    def forward(self, ids: KeyedJaggedTensor) -> torch.Tensor:
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


class HeavyRanker(nn.Module):
    """Multi-task ranker: `model(batch)` -> {"logits", "probabilities", "calibrated_probabilities"}, each [B, T]."""

    def __init__(self, config: ModelConfig, schema: Schema, sparse_device: torch.device | str = "cpu") -> None:
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
        self.sparse = SparseIdFeatures(config, sparse_device) if config.sparse.tables else None
        width += self.sparse.out_features if self.sparse else 0
        self.in_features = width

        sync = config.sync_batch_norm
        share = config.multi_task_type
        self.shared_backbone = build_backbone(width, config.backbone, sync) if share != "share_none" else None
        self.task_backbones = nn.ModuleDict(
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
        self.towers = nn.ModuleDict(towers)
        self.register_buffer("affine_scale", torch.tensor(scales), persistent=False)
        self.register_buffer("affine_bias", torch.tensor(biases), persistent=False)
        ratios = [task.calibration_ratio for task in schema.tasks]
        self.register_buffer("calibration_ratio", torch.tensor(ratios), persistent=False)

    def dense_input(self, batch: RecapBatch) -> torch.Tensor:
        parts = [self.featurize(batch.continuous, batch.binary)]
        parts += [self.twhin_norms[name](batch.embeddings[name]) for name in self.embedding_names]
        if self.sparse is not None:
            parts.append(self.sparse(batch.sparse_features))
        return torch.cat([p.to(parts[0].dtype) for p in parts], dim=1)

    def forward(self, batch: RecapBatch) -> dict[str, torch.Tensor]:
        x = self.dense_input(batch)
        shared = self.shared_backbone(x) if self.shared_backbone is not None else None
        logits = []
        for task in self.tasks:
            features = [shared] if shared is not None else []
            if self.task_backbones:
                features.append(self.task_backbones[task](x))
            tower_input = features[0] if len(features) == 1 else torch.cat(features, dim=1)
            logits.append(self.towers[task](tower_input))
        logits = torch.cat(logits, dim=1).float() * self.affine_scale + self.affine_bias
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
