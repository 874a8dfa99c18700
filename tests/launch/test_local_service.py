"""The local backend's tf.data service: `recap data-service` processes started with the job, always removed.

Real processes throughout: a dispatcher and dataset workers from `recap data-service`, and
training under torchrun (two ranks sharing one service job).
"""

from __future__ import annotations

import os
import signal
import threading

import pytest

from components.launch.local_service import data_service

pytestmark = pytest.mark.integration
tf = pytest.importorskip("tensorflow")


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as f:  # a zombie is gone for our purposes
        return f.read().rsplit(")", 1)[1].split()[0] != "Z"


def next_within(iterator, seconds: float):
    """next(iterator), failing the test instead of hanging when it takes longer than `seconds`."""
    box: list = []
    thread = threading.Thread(target=lambda: box.append(next(iterator)), daemon=True)
    thread.start()
    thread.join(seconds)
    assert box, f"no batch within {seconds}s"
    return box[0]


def test_a_killed_worker_does_not_stop_reading_and_no_process_outlives_a_failed_job(tmp_path):
    from components.common.schema import load_schema
    from components.convert import ConvertSettings, run
    from components.records.reader import ReaderOptions
    from components.records.service import consume, register, service_dataset
    from tests.convert.rawdata import write_raw

    schema = load_schema("local")
    write_raw(schema, str(tmp_path / "raw"), rows=300, files=1, row_group_size=50)
    run(str(tmp_path / "raw"), schema, str(tmp_path / "out"), ConvertSettings(shards=4, workers=1, eval_fraction=0.2))
    options = ReaderOptions(batch_size=16, num_parallel_reads=2, repeat=True)
    with pytest.raises(RuntimeError, match="the job failed"), data_service(2, "recap-test") as service:
        pids = service.pids
        dataset = service_dataset(str(tmp_path / "out" / "train"), schema, options, global_batch_size=16)
        batches = consume(register(service.dispatcher, dataset, 0, 60.0), dataset.element_spec, schema)
        for _ in range(5):
            next_within(batches, 120)
        os.kill(pids[1], signal.SIGKILL)  # one dataset worker dies mid-read
        rows = sum(next_within(batches, 60).batch_size for _ in range(40))
        assert rows == 40 * 16  # reading went on: the other worker serves the job
        raise RuntimeError("the job failed")
    assert not any(alive(pid) for pid in pids)


def test_training_through_the_service_ends_at_num_train_steps_and_leaves_no_service_process(tmp_path, caplog, capsys):
    """Two ranks (torchrun) consume one service job; the launcher removes dispatcher and worker after."""
    from components.common.schema import load_schema
    from components.convert import ConvertSettings, run
    from components.launch import LaunchSpec
    from components.launch import run as launch
    from components.train.checkpoint import latest_checkpoint
    from components.trainer_command.flags import TrainerArgs
    from tests.convert.rawdata import write_raw
    from tests.train.conftest import tiny_config_data, write_config

    schema = load_schema("local")
    write_raw(schema, str(tmp_path / "raw"), rows=400, files=1, row_group_size=50)
    run(str(tmp_path / "raw"), schema, str(tmp_path / "out"), ConvertSettings(shards=4, workers=1, eval_fraction=0.2))
    save_dir = str(tmp_path / "run")
    config = write_config(tmp_path / "tiny.yaml", tiny_config_data(save_dir, steps=6, checkpoint_every_n=3))
    args = TrainerArgs.of(config, train_data=str(tmp_path / "out" / "train"), save_dir=save_dir,
                          model_dir=str(tmp_path / "model"))
    spec = LaunchSpec(job_name="recap-train-service", image="", procs_per_worker=2, data_service_workers=1,
                      timeout_s=900.0)
    with caplog.at_level("INFO", logger="components.launch.local_service"):
        result = launch(spec, args, backend="local")
    assert result.status == "Succeeded"
    assert latest_checkpoint(save_dir)[0] == 6  # ends at exactly num_train_steps
    assert "mode=distributed_epoch" in capsys.readouterr().out  # rank 0 registered one job
    (started,) = [r.getMessage() for r in caplog.records if "pids" in r.getMessage()]
    pids = [int(p) for p in started.rsplit("(pids ", 1)[1].rstrip(")").split()]
    assert len(pids) == 2 and not any(alive(pid) for pid in pids)

