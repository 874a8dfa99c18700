"""Batches through the tf.data service: the reader's records and RecapBatches, one shared job, clear failures."""

from __future__ import annotations

import collections
import socket
import time

import pytest

from components.common.errors import DataError
from components.common.schema import load_schema
from components.convert import ConvertSettings, run
from components.records.batch import RecapBatch
from components.records.reader import ReaderOptions, count_records, read_batches
from components.records.service import (
    DataServiceUnreachable,
    consume,
    dispatcher_host_port,
    register,
    service_dataset,
)
from tests.convert.rawdata import write_raw
from tests.records.batches import batch_columns, fingerprints

tf = pytest.importorskip("tensorflow")

SCHEMA = load_schema("local")
EPOCH = ReaderOptions(batch_size=32, shuffle=False, repeat=False, drop_remainder=False, num_parallel_reads=2)


@pytest.fixture(scope="module")
def split(tmp_path_factory):
    """400 rows converted into 4 training shards."""
    root = tmp_path_factory.mktemp("service")
    write_raw(SCHEMA, str(root / "raw"), rows=400, files=2, row_group_size=50)
    run(str(root / "raw"), SCHEMA, str(root / "out"), ConvertSettings(shards=4, workers=1, eval_fraction=0.2))
    return str(root / "out" / "train")


@pytest.fixture(scope="module")
def service():
    """A dispatcher and two dataset workers in this process, on loopback."""
    from tensorflow.data.experimental.service import DispatchServer, WorkerConfig, WorkerServer

    dispatcher = DispatchServer()
    address = dispatcher.target.removeprefix("grpc://")
    workers = [WorkerServer(WorkerConfig(dispatcher_address=address)) for _ in range(2)]
    yield dispatcher.target
    for worker in workers:
        worker._stop()
    dispatcher._stop()


def rows(batches) -> collections.Counter:
    batches = list(batches)
    return collections.Counter(fingerprints(SCHEMA, batch_columns(SCHEMA, batches)) if batches else ())


def test_two_consumers_of_one_job_get_every_record_of_the_epoch_once(split, service):
    expected = rows(read_batches(split, SCHEMA, EPOCH))
    dataset = service_dataset(split, SCHEMA, EPOCH, global_batch_size=64)
    job = register(service, dataset, start_batch=0, connect_timeout_s=30)
    consumers = [consume(job, dataset.element_spec, SCHEMA) for _ in range(2)]  # two ranks
    got: list[list[RecapBatch]] = [[], []]
    live = [0, 1]
    while live:  # in turn, as ranks take their step's batch
        for index in list(live):
            batch = next(consumers[index], None)
            if batch is None:
                live.remove(index)
            else:
                got[index].append(batch)
    assert all(isinstance(b, RecapBatch) and b.batch_size <= 32 for part in got for b in part)
    assert rows(got[0] + got[1]) == expected  # no record twice, none missing
    assert got[0] and got[1]  # the ranks share the epoch


def test_a_resumed_service_starts_over_at_the_epoch_the_checkpoint_fell_in(split):
    """Read in process (the graph the workers run): resume restarts the epoch, never skips records."""
    whole = rows(read_batches(split, SCHEMA, EPOCH))
    options = ReaderOptions(**{**EPOCH.__dict__, "drop_remainder": False})

    def read(start: int) -> collections.Counter:
        parsed = service_dataset(split, SCHEMA, options, global_batch_size=64, start_batch=start)
        from components.records.layout import RecordLayout
        from components.records.reader import _Layout

        return rows(_Layout(SCHEMA, RecordLayout()).to_batch(p) for p in parsed)

    per_epoch = count_records(split)
    assert read(0) == whole
    assert read(2) == whole  # 2 x 64 records of the epoch read: the epoch again, from its start
    after_epoch = -(-per_epoch // 64)
    assert read(after_epoch - 1) == whole
    assert read(after_epoch) == collections.Counter()  # one epoch done and repeat: false → nothing left


@pytest.mark.parametrize("address", ["localhost", "grpc://localhost:port", "grpc://:5050"])
def test_a_malformed_dispatcher_address_is_named(address):
    with pytest.raises(DataError, match=f"data service dispatcher {address!r}: expected grpc://host:port"):
        dispatcher_host_port(address)


def test_an_unreachable_dispatcher_is_a_clear_error_within_the_timeout(split):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # nobody listens on it once closed
    dataset = service_dataset(split, SCHEMA, EPOCH, global_batch_size=64)
    start = time.monotonic()
    with pytest.raises(DataServiceUnreachable, match=f"grpc://127.0.0.1:{port}: not reachable within 1s"):
        register(f"grpc://127.0.0.1:{port}", dataset, 0, connect_timeout_s=1.0)
    assert time.monotonic() - start < 10


def test_a_port_that_is_no_dispatcher_is_a_clear_error_within_the_timeout(split):
    with socket.socket() as listener:  # accepts connections, never speaks gRPC
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        address = f"grpc://127.0.0.1:{listener.getsockname()[1]}"
        dataset = service_dataset(split, SCHEMA, EPOCH, global_batch_size=64)
        start = time.monotonic()
        with pytest.raises(DataServiceUnreachable, match=f"{address}: port open but dataset registration"):
            register(address, dataset, 0, connect_timeout_s=2.0)
        assert time.monotonic() - start < 15


def test_consumers_reconnect_to_a_dispatcher_restarted_with_its_journal(split, tmp_path):
    """After the restart, a worker only the restarted dispatcher knows of serves the old job's consumer."""
    from tensorflow.data.experimental.service import (
        DispatcherConfig,
        DispatchServer,
        WorkerConfig,
        WorkerServer,
    )

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    config = DispatcherConfig(port=port, work_dir=str(tmp_path / "journal"), fault_tolerant_mode=True,
                              worker_timeout_ms=2000)
    dispatcher = DispatchServer(config)
    worker = WorkerServer(WorkerConfig(dispatcher_address=f"localhost:{port}", heartbeat_interval_ms=200))
    options = ReaderOptions(batch_size=16, num_parallel_reads=2, repeat=True)
    dataset = service_dataset(split, SCHEMA, options, global_batch_size=16)
    batches = consume(register(dispatcher.target, dataset, 0, 30.0), dataset.element_spec, SCHEMA)
    for _ in range(3):
        next(batches)
    dispatcher._stop()
    dispatcher = DispatchServer(config)  # same port, same journal
    new_worker = WorkerServer(WorkerConfig(dispatcher_address=f"localhost:{port}", heartbeat_interval_ms=200))
    worker._stop()  # only the new worker is left
    try:
        assert sum(next(batches).batch_size for _ in range(30)) == 30 * 16
    finally:
        new_worker._stop()
        dispatcher._stop()
