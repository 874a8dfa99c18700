"""The validation source keeps its verified shards: each evaluation re-reads them, never re-hashes
or re-downloads them, and gets the same first batches."""

from __future__ import annotations

import hashlib
import types

import numpy as np
import pytest
import torch

from components.common import manifest, storage
from components.common.schema import load_schema
from components.convert import ConvertSettings, run
from components.records import shards as tfrecord_shards
from components.train.config import DataConfig
from components.train.distributed import DistEnv
from components.train.loop import reader_source
from tests.convert.rawdata import write_raw
from tests.records.batches import batch_columns

SCHEMA = load_schema("local")
ENV = DistEnv(rank=0, world_size=1, local_rank=0, local_world_size=1, device=torch.device("cpu"), backend="gloo")


@pytest.fixture(scope="module")
def eval_split(tmp_path_factory):
    root = tmp_path_factory.mktemp("eval-source")
    write_raw(SCHEMA, str(root / "raw"), rows=240, files=1, row_group_size=60)
    run(str(root / "raw"), SCHEMA, str(root / "out"), ConvertSettings(shards=4, workers=1, eval_fraction=0.5))
    return str(root / "out" / "eval")


def first_batches(source, count: int) -> dict[str, np.ndarray]:
    """The first `count` batches as evaluate reads them (a fresh read, closed after)."""
    batches = source(0)
    taken = [next(batches) for _ in range(count)]
    batches.close()
    return batch_columns(SCHEMA, taken)


@pytest.mark.parametrize("where", ["local", "gcs"])
def test_second_evaluation_neither_rehashes_nor_redownloads(eval_split, where, request, monkeypatch):
    inputs = eval_split
    if where == "gcs":
        inputs = storage.join(request.getfixturevalue("gcs_bucket"), "eval")
        storage.copy_prefix(eval_split, inputs)
    hashed, fetched = [], []

    def sha256(*args):
        hashed.append(1)
        return hashlib.sha256(*args)

    counting = types.SimpleNamespace(sha256=sha256, sha1=hashlib.sha1)
    monkeypatch.setattr(tfrecord_shards, "hashlib", counting)  # gs:// shards: hashed while downloaded
    monkeypatch.setattr(manifest, "hashlib", counting)  # local shards: hashed in place
    open_read = storage.open_read
    monkeypatch.setattr(storage, "open_read", lambda uri: fetched.append(uri) or open_read(uri))
    data = DataConfig(inputs=inputs, global_batch_size=16, repeat=False, drop_remainder=False, num_parallel_reads=2)
    source = reader_source(data, SCHEMA, ENV, seed=3, where="validation_data")

    first = first_batches(source, 3)
    shards_read = {uri for uri in fetched if not uri.endswith(".json")}
    assert len(hashed) >= 2 and (where == "local" or len(shards_read) >= 2)
    hashed.clear()
    fetched.clear()
    second = first_batches(source, 3)
    assert hashed == [] and [uri for uri in fetched if not uri.endswith(".json")] == []
    for name, column in first.items():
        np.testing.assert_array_equal(second[name], column, err_msg=name)
