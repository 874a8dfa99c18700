"""Training through the tf.data service when a piece of the service fails, with the local backend:
real `recap data-service` processes, real torchrun trainers, tiny data.

- a dataset worker killed mid-training: the trainer goes on with the other worker and ends at
  exactly num_train_steps (the dispatcher drops the dead worker after its 10 s timeout);
- no dispatcher at the address: every rank stops with one line naming the address, after the
  connect timeout, not at the process group's timeout;
- the dispatcher killed and restarted with its journal: the trainer reconnects and finishes.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import re
import signal
import socket
import threading
import time

import pytest

pytestmark = pytest.mark.integration
tf = pytest.importorskip("tensorflow")

STEPS = 100  # enough that a fault after the first checkpoint (step 10) lands mid-training


@pytest.fixture(scope="module")
def split(tmp_path_factory) -> str:
    from components.common.schema import load_schema
    from components.convert import ConvertSettings, run
    from tests.convert.rawdata import write_raw

    root = tmp_path_factory.mktemp("service-failures")
    schema = load_schema("local")
    write_raw(schema, str(root / "raw"), rows=300, files=1, row_group_size=50)
    run(str(root / "raw"), schema, str(root / "out"), ConvertSettings(shards=4, workers=1, eval_fraction=0.2))
    return str(root / "out" / "train")


def trainer_args(tmp_path, split: str, steps: int = STEPS, **flags):
    from components.trainer_command.flags import TrainerArgs
    from tests.train.conftest import tiny_config_data, write_config

    save_dir = str(tmp_path / "run")
    data = tiny_config_data(save_dir, steps=steps, checkpoint_every_n=10, eval_every_n=10_000)
    config = write_config(tmp_path / "tiny.yaml", data)
    return save_dir, TrainerArgs.of(config, train_data=split, save_dir=save_dir, model_dir=str(tmp_path / "model"),
                                    **flags)


def committed(save_dir: str) -> int:
    from components.train.checkpoint import latest_checkpoint

    found = latest_checkpoint(save_dir)
    return found[0] if found else 0


def wait_for(condition, seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, f"{what}: not within {seconds}s"
        time.sleep(0.1)


class _Pids(logging.Handler):
    """Catches the local launcher's "... (pids P Q R)" line: dispatcher first, then the workers."""

    def __init__(self) -> None:
        super().__init__()
        self.pids: list[int] = []

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if "local data service for" in message and "(pids " in message:
            self.pids = [int(p) for p in message.rsplit("(pids ", 1)[1].rstrip(")").split()]


def test_a_worker_killed_mid_training_does_not_stop_training_short_of_num_train_steps(tmp_path, split):
    from components.launch import LaunchSpec
    from components.launch import run as launch

    save_dir, args = trainer_args(tmp_path, split)
    spec = LaunchSpec(job_name="recap-train-kill-worker", image="", procs_per_worker=1, data_service_workers=2,
                      timeout_s=240.0)  # a hang fails as a LaunchTimeout, not as a stuck test
    pids = _Pids()
    logger = logging.getLogger("components.launch.local_service")
    logger.addHandler(pids)
    logger.setLevel(logging.INFO)
    outcome: list = []

    def train() -> None:
        try:
            outcome.append(launch(spec, args, backend="local"))
        except BaseException as exc:  # reported by the assertions below
            outcome.append(exc)

    thread = threading.Thread(target=train, daemon=True)
    thread.start()
    try:
        wait_for(lambda: committed(save_dir) >= 10 or outcome, 180, "the first checkpoint")
        assert not outcome, f"training ended before a worker could be killed: {outcome}"
        os.kill(pids.pids[2], signal.SIGKILL)  # the second dataset worker, mid-training
        killed_at = committed(save_dir)
        thread.join(spec.timeout_s)
    finally:
        logger.removeHandler(pids)
    assert killed_at < STEPS, "the worker was killed after the last step: make STEPS larger"
    assert outcome and not isinstance(outcome[0], BaseException), outcome
    assert outcome[0].status == "Succeeded"
    assert committed(save_dir) == STEPS  # exactly num_train_steps


def test_an_unreachable_dispatcher_stops_the_job_with_its_address_within_the_connect_timeout(tmp_path, split, capfd):
    """Two ranks: rank 0 waits `data_service_connect_timeout_s` (5 s) for the port, then the job stops
    with one line naming the address (the failing rank's own error, exit code 1), not torchrun's
    block. Bound: from rank 0's "waiting up to 5s" log line to torchrun's report of the failed rank,
    the timeout plus one socket timeout (5 s) plus teardown, asserted below 40 s on this shared
    machine; the process group's timeout (600 s) never applies."""
    from components.launch import LaunchSpec, TrainingFailed
    from components.launch import run as launch

    # A port bound but never listened on refuses connections, and nothing else (torchrun's own
    # rendezvous store, picking a free port too) can take it while the test runs.
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        address = f"grpc://127.0.0.1:{held.getsockname()[1]}"
        _, args = trainer_args(tmp_path, split, data_service_dispatcher=address, data_service_connect_timeout_s=5.0)
        spec = LaunchSpec(job_name="recap-train-no-dispatcher", image="", procs_per_worker=2, timeout_s=300.0,
                          log_tail_lines=1000)
        with pytest.raises(TrainingFailed) as info:
            launch(spec, args, backend="local")
    assert type(info.value) is TrainingFailed  # the ranks failed; no LaunchTimeout
    message = str(info.value)
    assert message.startswith(f"data service dispatcher {address}: not reachable within 5s"), message
    assert "\n" not in message and info.value.exit_code == 1
    logs = capfd.readouterr().out
    waiting = re.search(r"(\d\d:\d\d:\d\d),\d+ INFO components.records.service: data service: waiting up to 5s", logs)
    failed = re.search(r"E\d{4} (\d\d:\d\d:\d\d)\.\d+ .*failed \(exitcode: 1\)", logs)
    assert waiting and failed, logs[-3000:]
    seconds = (dt.datetime.strptime(failed[1], "%H:%M:%S") - dt.datetime.strptime(waiting[1], "%H:%M:%S")).seconds
    assert 5 <= seconds < 40, seconds


def test_a_dispatcher_restarted_with_its_journal_keeps_the_training_going(tmp_path, split):
    from components.launch import LaunchSpec
    from components.launch.command import trainer_command
    from components.launch.local import run_torchrun
    from components.launch.local_service import _start, _wait_ready, data_service

    save_dir, args = trainer_args(tmp_path, split)
    spec = LaunchSpec(job_name="recap-train-restart-dispatcher", image="", procs_per_worker=1, timeout_s=240.0)
    outcome: list = []
    with data_service(1, spec.job_name) as service:
        port = service.dispatcher.rsplit(":", 1)[1]
        command = trainer_command(spec, args.with_flag("data_service_dispatcher", service.dispatcher), "local")

        def train() -> None:
            try:
                outcome.append(run_torchrun(spec, command))
            except BaseException as exc:
                outcome.append(exc)

        thread = threading.Thread(target=train, daemon=True)
        thread.start()
        wait_for(lambda: committed(save_dir) >= 10 or outcome, 180, "the first checkpoint")
        assert not outcome, f"training ended before the dispatcher could be restarted: {outcome}"
        os.kill(service.pids[0], signal.SIGKILL)
        restarted_at = committed(save_dir)
        log_path = str(tmp_path / "restarted-dispatcher.log")
        restarted = _start(["dispatcher", f"--port={port}", f"--journal-dir={service.journal_dir}"], log_path)
        try:
            _wait_ready(restarted, log_path, "restarted dispatcher", time.monotonic() + 180)
            thread.join(spec.timeout_s)
        finally:
            os.killpg(restarted.pid, signal.SIGKILL)
            restarted.wait()
    assert restarted_at < STEPS, "the dispatcher was restarted after the last step: make STEPS larger"
    assert outcome and not isinstance(outcome[0], BaseException), outcome
    assert committed(save_dir) == STEPS
