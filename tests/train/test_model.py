"""The Heavy Ranker model, single process: featurization, backbones, towers, outputs, hashing."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from torch import nn

from components.common.schema import TaskSpec
from components.ranker.config import ModelConfig
from components.ranker.layers import GlobalBatchNorm1d
from components.ranker.model import HeavyRanker, hash_ids
from components.train.config import OptimizerConfig
from components.train.loss import multi_task_loss
from components.train.optim import BACKBONE_GROUP, parameter_groups

BACKBONES = {
    "parallel_mask_net": {"mask_net": {"mask_blocks": [{"aggregation_size": 16, "output_size": 8}] * 2,
                                       "mlp": {"layer_sizes": [16], "final_layer_activation": True}}},
    "stacked_mask_net": {"mask_net": {"use_parallel": False, "mask_blocks": [
        {"aggregation_size": 16, "output_size": 12, "input_layer_norm": True},
        {"aggregation_size": 16, "output_size": 8}]}},
    "mlp": {"mlp": {"layer_sizes": [32, 16], "final_layer_activation": True,
                    "batch_norm": {"affine": True, "momentum": 0.1}, "dropout": 0.1}},
}


def make_model(schema, tiny_config, **changes) -> HeavyRanker:
    data = tiny_config.model.model_dump() | changes
    torch.manual_seed(0)
    return HeavyRanker(ModelConfig.model_validate(data), schema)


@pytest.mark.parametrize("backbone", sorted(BACKBONES))
@pytest.mark.parametrize("sharing", ["share_all", "share_partial", "share_none"])
def test_every_architecture_trains_one_step(schema, tiny_config, batch, backbone, sharing):
    model = make_model(schema, tiny_config, backbone=BACKBONES[backbone], multi_task_type=sharing)
    out = model(batch)
    n_tasks = len(schema.tasks)
    assert {k: tuple(v.shape) for k, v in out.items()} == {
        "logits": (32, n_tasks), "probabilities": (32, n_tasks), "calibrated_probabilities": (32, n_tasks)}
    loss, per_task = multi_task_loss(out["logits"], batch.labels, batch.weights, torch.ones(n_tasks))
    loss.backward()
    assert torch.isfinite(loss) and per_task.shape == (n_tasks,)
    unused = [n for n, p in model.named_parameters() if p.grad is None]
    assert unused == []


def test_share_partial_has_shared_and_per_task_backbones(schema, tiny_config):
    model = make_model(schema, tiny_config, multi_task_type="share_partial")
    assert model.shared_backbone is not None and set(model.task_backbones) == set(schema.task_names)
    alone = make_model(schema, tiny_config, multi_task_type="share_none")
    assert alone.shared_backbone is None and len(alone.task_backbones) == len(schema.tasks)


def test_non_finite_continuous_values_give_finite_outputs(schema, tiny_config, batch):
    model = make_model(schema, tiny_config)
    batch.continuous[0, :5] = torch.tensor([float("nan"), float("inf"), -float("inf"), 1e30, -1e30])
    out = model(batch)
    assert torch.isfinite(out["logits"]).all()


def test_truncation_ignores_values_past_the_cut(schema, tiny_config, batch):
    featurization = tiny_config.model.featurization.model_dump() | {"continuous_truncation": 40, "binary_truncation": 10}
    model = make_model(schema, tiny_config, featurization=featurization).eval()
    before = model(batch)["logits"]
    batch.continuous[:, 40:] = 123.0
    batch.binary[:, 10:] = 1 - batch.binary[:, 10:]
    assert torch.equal(model(batch)["logits"], before)
    assert model.featurize.out_features == 50


def test_calibration_undoes_downsampling(schema, tiny_config, batch):
    rates = [TaskSpec(t.label, pos_downsampling_rate=1.0, neg_downsampling_rate=0.1) for t in schema.tasks]
    schema = type(schema)(name=schema.name, features=schema.features, tasks=tuple(rates))
    model = make_model(schema, tiny_config).eval()
    out = model(batch)
    p, r = out["probabilities"], 0.1
    assert torch.allclose(out["calibrated_probabilities"], p * r / (1 - p + r * p))
    assert (out["calibrated_probabilities"] < p).all()  # negatives were downsampled: true rate is lower


def test_affine_map_scales_the_logit(schema, tiny_config, batch):
    plain = make_model(schema, tiny_config).eval()
    mapped = make_model(schema, tiny_config, tasks={"is_favorited": {"affine_map": {"scale": 2.0, "bias": -1.0}}}).eval()
    mapped.load_state_dict(plain.state_dict())
    a, b = plain(batch)["logits"], mapped(batch)["logits"]
    assert torch.allclose(b[:, 0], 2 * a[:, 0] - 1, atol=1e-5)
    assert torch.equal(b[:, 1:], a[:, 1:])


def test_sparse_ids_change_the_prediction(schema, tiny_config, batch):
    model = make_model(schema, tiny_config).eval()
    before = model(batch)["logits"]
    ids = batch.sparse_features
    batch.sparse_features = type(ids).from_lengths_sync(keys=ids.keys(), values=ids.values() + 1, lengths=ids.lengths())
    assert not torch.allclose(model(batch)["logits"], before)


@given(st.lists(st.integers(-(2**63), 2**63 - 1), min_size=1, max_size=50), st.integers(1, 10**7))
def test_hashed_ids_are_valid_rows(ids, rows):
    hashed = hash_ids(torch.tensor(ids, dtype=torch.int64), rows)
    assert ((hashed >= 0) & (hashed < rows)).all()
    assert torch.equal(hashed, hash_ids(torch.tensor(ids, dtype=torch.int64), rows))


def test_hashing_spreads_sequential_ids():
    hashed = hash_ids(torch.arange(10_000) * 1000, 1024)
    counts = torch.bincount(hashed, minlength=1024).float()
    assert counts.min() > 0 and counts.max() < 3 * counts.mean()


def test_global_batch_norm_matches_batch_norm_in_one_process():
    torch.manual_seed(0)
    ours, theirs = GlobalBatchNorm1d(6, momentum=0.1), nn.BatchNorm1d(6, momentum=0.1)
    for _ in range(3):
        x = torch.randn(17, 6) * 3 + 1
        assert torch.allclose(ours(x), theirs(x), atol=1e-5)
    assert torch.allclose(ours.running_mean, theirs.running_mean, atol=1e-6)
    assert torch.allclose(ours.running_var, theirs.running_var, atol=1e-5)
    ours.eval(), theirs.eval()
    x = torch.randn(5, 6)
    assert torch.allclose(ours(x), theirs(x), atol=1e-5)


def test_every_dense_parameter_has_exactly_one_optimizer_group(schema, tiny_config):
    model = make_model(schema, tiny_config, multi_task_type="share_partial")
    named = [(n, p) for n, p in model.named_parameters() if ".embedding_bags." not in n]
    groups = parameter_groups(named, list(schema.task_names))
    assert sum(len(g) for g in groups.values()) == len(named)
    assert all(n.startswith(("towers.is_replied.", "task_backbones.is_replied.")) for n in groups["is_replied"])
    assert not any(n.startswith("towers.") for n in groups[BACKBONE_GROUP])
    assert any(n.startswith("featurize.") for n in groups[BACKBONE_GROUP])


def test_weighted_loss_is_row_mean_of_weighted_bce():
    logits = torch.tensor([[0.0, 2.0], [1.0, -1.0]])
    labels = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    weights = torch.tensor([[2.0, 1.0], [1.0, 1.0]])
    loss, per_task = multi_task_loss(logits, labels, weights, torch.tensor([1.0, 3.0]))
    bce = lambda z, y: -(y * torch.log(torch.sigmoid(z)) + (1 - y) * torch.log(1 - torch.sigmoid(z)))  # noqa: E731
    expected0 = (2 * bce(torch.tensor(0.0), 1.0) + bce(torch.tensor(1.0), 0.0)) / 2
    expected1 = (bce(torch.tensor(2.0), 0.0) + 3 * bce(torch.tensor(-1.0), 1.0)) / 2
    assert torch.allclose(per_task, torch.stack([expected0, expected1]), atol=1e-6)
    assert torch.isclose(loss, per_task.mean())


def test_embedding_adam_is_refused_on_cpu():
    from components.common.errors import ConfigError
    from components.train.optim import embedding_optimizer

    config = OptimizerConfig.model_validate({"multi_task_learning_rates": {
        "backbone_learning_rate": {"constant": {"learning_rate": 1.0}}}, "embedding": {"algorithm": "adam"}})
    with pytest.raises(ConfigError, match="not supported by fbgemm on CPU"):
        embedding_optimizer(config.embedding, torch.device("cpu"))
