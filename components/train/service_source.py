"""The training data as a `BatchSource` read through the tf.data service (`--data_service_dispatcher`).

Rank 0 registers the dataset with the dispatcher and names the job; the id and name are
broadcast, and every rank consumes its batches from that one job, so the workers serve one
job, not one per rank. A failure of rank 0 (an unreachable dispatcher) is raised on every
rank at once. Semantics (processing mode, resume) are in `components.records.service`.
"""

from __future__ import annotations

import logging

from components.common.schema import Schema
from components.records.reader import ReaderOptions
from components.train.config import DataConfig
from components.train.distributed import DistEnv
from components.train.ranks import on_chief
from components.train.synthetic import BatchSource

log = logging.getLogger(__name__)


def service_source(data: DataConfig, schema: Schema, env: DistEnv, seed: int, options: ReaderOptions) -> BatchSource:
    """`start -> batches` of this rank from the job rank 0 registers with `data.data_service_dispatcher`."""
    from components.records import service

    dispatcher = data.data_service_dispatcher
    assert dispatcher is not None
    service.dispatcher_host_port(dispatcher)  # a malformed address fails on every rank, before any collective

    def open_batches(start: int):
        dataset = service.service_dataset(data.inputs, schema, options, data.global_batch_size, start)

        def register() -> service.ServiceJob:
            return service.register(dispatcher, dataset, start, data.data_service_connect_timeout_s)

        job = on_chief(register, f"register the training data with the data service at {dispatcher}", env)
        if env.is_chief:
            log.info("data service: dispatcher=%s dataset_id=%s job=%s mode=%s", job.dispatcher,
                     job.dataset_id, job.job_name, service.PROCESSING_MODE)
        return service.consume(job, dataset.element_spec, schema, options.check_values)

    return open_batches
