"""Trainer configs: the shipped YAMLs load, mistakes fail at load time naming the field."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from components.common.errors import ConfigError
from components.train.config import LearningRateConfig, load_train_config
from components.train.optim import learning_rate_at
from tests.train.conftest import tiny_config_data, write_config


def test_prod_config_has_the_originals_shapes():
    config = load_train_config("configs/prod.yaml")
    blocks = config.model.backbone.mask_net.mask_blocks
    assert [(b.aggregation_size, b.output_size) for b in blocks] == [(1024, 1024)] * 4
    assert config.model.backbone.mask_net.use_parallel
    assert config.model.backbone.mask_net.mlp.layer_sizes == [2048]
    assert config.model.tower.layer_sizes == [256, 128, 1]
    assert (config.model.featurization.continuous_truncation, config.model.featurization.binary_truncation) == (2117, 59)
    assert config.optimizer.adam.beta_1 == 0.95 and config.optimizer.adam.epsilon == 1e-7
    assert config.model.sparse.sharding_types == ["table_wise"]  # a plan CPU runs test, also on GPUs
    assert config.train_data.global_batch(8) == 8 * config.train_data.rank_batch_size(8, "train_data") == 8 * 1024


def test_local_config_loads_and_cli_overrides_apply(tmp_path):
    config = load_train_config("configs/local.yaml", {"train_data.inputs": "gs://b/train",
                                                      "training.save_dir": str(tmp_path),
                                                      "training.num_train_steps": 7})
    assert config.train_data.inputs == "gs://b/train"
    assert config.training.num_train_steps == 7
    assert config.model_dir == f"{tmp_path}/model"


def test_unknown_field_names_its_path(tmp_path):
    data = tiny_config_data(str(tmp_path))
    data["model"]["backbone"]["mask_net"]["mask_blockz"] = []
    with pytest.raises(ConfigError, match=r"model\.backbone\.mask_net"):
        load_train_config(write_config(tmp_path / "c.yaml", data))


def test_task_unknown_to_the_schema_is_rejected(tmp_path):
    data = tiny_config_data(str(tmp_path))
    data["model"]["tasks"] = {"is_liked": {"pos_weight": 2.0}}
    with pytest.raises(ConfigError, match="model.tasks.is_liked: not a task"):
        load_train_config(write_config(tmp_path / "c.yaml", data))


def test_id_table_must_name_an_id_feature(tmp_path):
    data = tiny_config_data(str(tmp_path))
    data["model"]["sparse"]["tables"][0]["feature"] = "continuous"
    with pytest.raises(ConfigError, match="model.sparse.tables.0.feature"):
        load_train_config(write_config(tmp_path / "c.yaml", data))


def test_missing_tower_learning_rate_is_rejected(tmp_path):
    data = tiny_config_data(str(tmp_path))
    del data["optimizer"]["multi_task_learning_rates"]["default_tower_learning_rate"]
    with pytest.raises(ConfigError, match="no tower_learning_rates for is_favorited"):
        load_train_config(write_config(tmp_path / "c.yaml", data))


def test_two_schedules_in_one_group_is_an_error():
    with pytest.raises(ValueError, match="exactly one schedule"):
        LearningRateConfig(constant={"learning_rate": 1.0}, linear_ramp_to_constant={"learning_rate": 1.0, "num_ramp_steps": 3})


@given(lr=st.floats(1e-6, 1.0), ramp=st.integers(1, 1000), step=st.integers(0, 5000))
def test_linear_ramp_to_constant(lr, ramp, step):
    config = LearningRateConfig(linear_ramp_to_constant={"learning_rate": lr, "num_ramp_steps": ramp})
    value = learning_rate_at(config, step)
    assert 0 <= value <= lr * (1 + 1e-12)
    assert value == pytest.approx(lr if step >= ramp else lr * step / ramp)
    assert learning_rate_at(config, step + 1) >= value


@given(lr=st.floats(1e-5, 1.0), final=st.floats(0, 1e-5), ramp=st.integers(0, 100), span=st.integers(1, 1000),
       step=st.integers(0, 3000))
def test_linear_ramp_to_cosine(lr, final, ramp, span, step):
    config = LearningRateConfig(linear_ramp_to_cosine={"learning_rate": lr, "num_ramp_steps": ramp,
                                                       "final_learning_rate": final, "final_num_steps": ramp + span})
    value = learning_rate_at(config, step)
    assert min(final, 0.0) <= value <= lr * (1 + 1e-9)
    if step >= ramp + span:
        assert value == pytest.approx(final)
    if step == ramp:
        assert value == pytest.approx(lr)
    if step >= ramp:  # decays monotonically after the ramp
        assert learning_rate_at(config, step + 1) <= value + 1e-15


def test_piecewise_constant_boundaries():
    config = LearningRateConfig(piecewise_constant={"learning_rate_boundaries": [10, 20],
                                                    "learning_rate_values": [1.0, 0.5, 0.1]})
    assert [learning_rate_at(config, s) for s in (0, 9, 10, 19, 20, 10**6)] == [1.0, 1.0, 0.5, 0.5, 0.1, 0.1]
    assert not math.isnan(learning_rate_at(config, 0))


def test_prod_uses_per_gpu_batch_norm_and_the_global_one_stays_a_choice(tmp_path):
    """prod: the original's local batch norm (no collectives); sync_batch_norm: true keeps the global one."""
    from torch import nn

    from components.ranker.layers import GlobalBatchNorm1d
    from components.ranker.model import HeavyRanker

    prod = load_train_config("configs/prod.yaml")
    norms = [m for m in HeavyRanker(prod.model, prod.load_schema(), sparse_device="meta").modules()
             if isinstance(m, nn.BatchNorm1d)]
    assert len(norms) == 21 and not any(isinstance(m, GlobalBatchNorm1d) for m in norms)
    tiny = load_train_config(write_config(tmp_path / "t.yaml", tiny_config_data(str(tmp_path))))
    assert tiny.model.sync_batch_norm
    model = HeavyRanker(tiny.model, tiny.load_schema(), sparse_device="meta")
    assert all(isinstance(m, GlobalBatchNorm1d) for m in model.modules() if isinstance(m, nn.BatchNorm1d))


# The original's learning rates, set for its global batch of 128 (peak; cosine final rate).
ORIGINAL_BATCH = 128
ORIGINAL_RATES = {"backbone": (1e-4, None), "is_negative_feedback_v2": (3e-3, 1e-4),
                  "is_report_tweet_clicked": (3e-3, 1e-4), "is_replied_reply_engaged_by_author": (1e-4, None)}
ORIGINAL_TOWER_RATE = (1e-3, None)


def test_prod_learning_rates_are_the_originals_scaled_by_the_square_root_of_the_batch():
    prod = load_train_config("configs/prod.yaml")
    factor = math.sqrt(prod.train_data.per_rank_batch_size / ORIGINAL_BATCH)
    rates = prod.optimizer.multi_task_learning_rates
    schedules = {"backbone": rates.backbone_learning_rate, **rates.tower_learning_rates}
    assert set(schedules) == {"backbone", *prod.load_schema().task_names}
    for name, config in schedules.items():
        schedule = config.linear_ramp_to_constant or config.linear_ramp_to_cosine
        peak, final = ORIGINAL_RATES.get(name, ORIGINAL_TOWER_RATE)
        assert schedule.learning_rate == pytest.approx(peak * factor, rel=2e-3), name
        if final is not None:
            assert schedule.final_learning_rate == pytest.approx(final * factor, rel=2e-3), name
