"""The oracle under an evaluation protocol: exact where IDs are known, integrated where they are not."""

from __future__ import annotations

import numpy as np
import pytest

from components.common.errors import DataError
from components.common.schema import load_schema
from components.convert.plan import eval_mask
from components.datagen import generate
from components.datagen.eval_oracle import (
    EvalProtocol,
    RankLookup,
    _signal_inputs,
    eval_oracle,
    expected_probabilities,
)
from components.datagen.generate import block_to_table
from components.datagen.rows import label_logits, sample_rows, sigmoid
from components.datagen.world import build_world

SCHEMA = load_schema("local")


def test_logits_recomputed_from_the_raw_rows_give_the_generators_probabilities() -> None:
    world = build_world(SCHEMA)
    block = sample_rows(world, np.random.default_rng(3), 2_000)
    table = block_to_table(SCHEMA, block)
    users = RankLookup(world.users, "user_id")(table.column("user_id").to_numpy(), "t")
    authors = RankLookup(world.authors, "author_id")(table.column("author_id").to_numpy(), "t")
    logits = label_logits(world, _signal_inputs(world, SCHEMA, table, users, authors))
    recomputed = expected_probabilities(logits, np.zeros((logits.shape[1],) * 2), world.nested_parent)
    np.testing.assert_allclose(recomputed, block.probabilities, rtol=1e-5, atol=1e-7)


def test_integrating_an_offset_matches_monte_carlo_for_plain_and_nested_labels() -> None:
    rng = np.random.default_rng(0)
    logits = rng.normal(-2.0, 1.0, (50, 3))
    a = rng.normal(0, 0.8, (3, 2))
    covariance = a @ a.T
    parent = np.array([-1, -1, 0])  # label 2 is label 0 AND its own Bernoulli
    exact = expected_probabilities(logits, covariance, parent)
    offsets = rng.standard_normal((200_000, 2)) @ a.T
    own = sigmoid(logits[:, None, :] + offsets[None, :, :])
    monte_carlo = own.mean(axis=1)
    monte_carlo[:, 2] = (own[:, :, 2] * own[:, :, 0]).mean(axis=1)
    np.testing.assert_allclose(exact, monte_carlo, atol=2e-3)


def test_unknown_ids_are_a_clear_error(tmp_path) -> None:
    with pytest.raises(DataError, match="user_id 12345 is not an ID"):
        RankLookup(build_world(SCHEMA).users, "user_id")(np.array([12345]), "x.parquet")


@pytest.fixture(scope="module")
def raw(tmp_path_factory) -> str:
    out = str(tmp_path_factory.mktemp("oracle") / "raw")
    generate(SCHEMA, out, rows=40_000, files=2, seed=5, row_group_rows=8_000)
    return out


def test_the_user_split_oracle_is_below_the_all_knowing_one_and_the_item_split_matches_it(raw) -> None:
    user_split = eval_oracle(raw, SCHEMA, EvalProtocol("user_id", 0.2), eval_mask)
    item_split = eval_oracle(raw, SCHEMA, EvalProtocol("tweet_id", 0.2), eval_mask)
    assert user_split["unseen_user_share"] == 1.0  # the split is on users: no eval user trained
    assert item_split["unseen_user_share"] < 0.02  # same users, new items
    assert user_split["protocol"] == {"split_key": "user_id", "eval_fraction": 0.2}
    for task in ("is_favorited", "is_video_playback_50", "is_good_clicked_convo_desc_v2"):
        # Not knowing the user costs signal: integrating the effect out flattens the predictions.
        u, i = user_split["tasks"][task], item_split["tasks"][task]
        assert 0.5 < u["auroc"] < i["auroc"]
        assert 0 < u["rce"] < i["rce"]
        assert 0.8 < i["calibration"] < 1.2
