"""Batches on the host before the device: IDs hashed as the exported model hashes them, pinned only for CUDA."""

from __future__ import annotations

import pytest
import torch

from components.common.errors import DataError
from components.ranker.config import ModelConfig
from components.ranker.model import HeavyRanker
from components.records.batch import RecapBatch, with_hashed_ids
from components.train import feed
from components.train.synthetic import synthetic_source


def models(schema, tiny_config) -> tuple[HeavyRanker, HeavyRanker]:
    """The exported model's kind (hashes raw IDs) and the training kind (takes hashed IDs), same weights."""
    config = ModelConfig.model_validate(tiny_config.model.model_dump())
    serving = HeavyRanker(config, schema).eval()
    training = HeavyRanker(config, schema, hash_ids_in_forward=False).eval()
    training.load_state_dict(serving.state_dict())
    return serving, training


def test_hashed_batch_gives_the_serving_models_predictions(schema, tiny_config, batch):
    serving, training = models(schema, tiny_config)
    hashed = with_hashed_ids(batch, training.id_tables())
    with torch.no_grad():
        expected, got = serving(batch), training(hashed)
    for key in expected:
        assert torch.equal(got[key], expected[key]), key
    # tables' features in table order, every value a row of its table
    assert hashed.sparse_features.keys() == [f for f, _ in training.id_tables()]
    for feature, rows in training.id_tables():
        values = hashed.sparse_features[feature].values()
        assert len(values) == batch.batch_size and ((values >= 0) & (values < rows)).all()


def test_raw_ids_into_the_training_model_do_not_pass_silently(schema, tiny_config, batch):
    _, training = models(schema, tiny_config)
    with pytest.raises((IndexError, RuntimeError)):  # raw IDs lie far outside the tables
        training(batch)


def test_a_batch_with_a_missing_id_value_is_refused(schema, tiny_config, batch):
    _, training = models(schema, tiny_config)
    ids = batch.sparse_features
    short = type(ids).from_lengths_sync(keys=ids.keys(), values=ids.values()[1:],
                                        lengths=torch.cat([torch.zeros(1, dtype=ids.lengths().dtype), ids.lengths()[1:]]))
    with pytest.raises(DataError, match="expected one ID per row"):
        with_hashed_ids(RecapBatch(**{**batch.__dict__, "sparse_features": short}), training.id_tables())


class PinRecorder(RecapBatch):
    pinned = 0

    def pin_memory(self) -> RecapBatch:
        PinRecorder.pinned += 1
        return self


@pytest.mark.parametrize(("device", "pins"), [("cpu", 0), ("cuda", 1), ("cuda:1", 1), ("meta", 0)])
def test_host_batches_are_pinned_only_for_cuda(schema, tiny_config, batch, monkeypatch, device, pins):
    # torch.device("cuda") stands in for a GPU: only its type is read before the copy
    _, training = models(schema, tiny_config)
    monkeypatch.setattr("components.train.feed.with_hashed_ids",
                        lambda b, tables: PinRecorder(**with_hashed_ids(b, tables).__dict__))
    PinRecorder.pinned = 0
    source = feed.fed_source(lambda start: iter([batch, batch]), training.id_tables(), torch.device(device))
    out = list(source(0))
    assert len(out) == 2 and PinRecorder.pinned == 2 * pins


def test_fed_source_hashes_every_batch_and_closes_its_source(schema, tiny_config):
    _, training = models(schema, tiny_config)
    closed = []

    def source(start):
        inner = synthetic_source(schema, 8)(start)
        try:
            yield from inner
        finally:
            closed.append(start)

    batches = feed.fed_source(source, training.id_tables(), torch.device("cpu"))(3)
    first = next(batches)
    assert first.sparse_features.keys() == [f for f, _ in training.id_tables()]
    expected = with_hashed_ids(next(synthetic_source(schema, 8)(3)), training.id_tables())
    assert torch.equal(first.sparse_features.values(), expected.sparse_features.values())
    batches.close()
    assert closed == [3]
