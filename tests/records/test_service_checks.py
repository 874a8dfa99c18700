"""The reader's per-batch contract checks (labels in {0, 1}, finite embeddings) on the tf.data
service's consumer side: a batch from the service names no shard, so the error names the batch."""

from __future__ import annotations

import numpy as np
import pytest

from components.common.errors import EXIT_CHECK_FAILED, DataError
from components.common.schema import load_schema
from components.records.reader import ReaderOptions, read_batches
from components.records.service import consume, register, service_dataset
from tests.records.test_reader import _converted_unchecked, inf_in_embedding

tf = pytest.importorskip("tensorflow")

SCHEMA = load_schema("local")
OPTIONS = ReaderOptions(batch_size=16, shuffle=False, repeat=False, drop_remainder=False, num_parallel_reads=1)


@pytest.fixture(scope="module")
def service():
    """A dispatcher and one dataset worker in this process, on loopback."""
    from tensorflow.data.experimental.service import DispatchServer, WorkerConfig, WorkerServer

    dispatcher = DispatchServer()
    worker = WorkerServer(WorkerConfig(dispatcher_address=dispatcher.target.removeprefix("grpc://")))
    yield dispatcher.target
    worker._stop()
    dispatcher._stop()


def through_service(service: str, split, check_values: bool = True) -> list:
    dataset = service_dataset(str(split), SCHEMA, OPTIONS, global_batch_size=OPTIONS.batch_size)
    return list(consume(register(service, dataset, 0, 60.0), dataset.element_spec, SCHEMA, check_values))


def test_labels_outside_0_1_fail_naming_the_service_batch_row_and_column_with_the_readers_exit_code(tmp_path, service):
    import pyarrow as pa

    label = SCHEMA.task_label(SCHEMA.tasks[0])

    def labels_0_to_9(table):
        return table.set_column(table.schema.get_field_index(label.column), label.column,
                                pa.array(np.arange(len(table)) % 10, type=label.arrow_type))

    split = _converted_unchecked(tmp_path, labels_0_to_9)
    with pytest.raises(DataError) as from_service:
        through_service(service, split)
    assert from_service.match(
        rf"^tf\.data service batch 1 \(job recap-\w+-from-0\): row \d+ \(IDs \[[-\d, ]+\]\): column "
        rf"'{label.column}' \(feature {label.feature}\) has value \d\.0 \(labels are 0 or 1\) \[label_not_binary\]$")
    with pytest.raises(DataError) as in_process:
        list(read_batches(str(split), SCHEMA, OPTIONS))
    assert from_service.value.exit_code == in_process.value.exit_code == EXIT_CHECK_FAILED
    assert len(through_service(service, split, check_values=False)) == 120 // 16 + 1  # the checks are what failed


def test_a_non_finite_embedding_fails_naming_the_service_batch(tmp_path, service):
    spec = SCHEMA.embeddings[0]
    split = _converted_unchecked(tmp_path, inf_in_embedding(40))
    with pytest.raises(DataError, match=rf"^tf\.data service batch \d+ \(job \S+\): row \d+ .*column '{spec.column}' "
                                        rf".*inf at element 3.*\[non_finite\]$"):
        through_service(service, split)
