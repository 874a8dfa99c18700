"""A failed training run ends with the failing rank's one line and exit code, not torchrun's block.

The cheap tests play the ranks with small scripts; the integration test runs `recap train` with
torchrun and 2 trainer processes on a split whose labels break the contract.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from components.launch.local import run_torchrun
from components.launch.spec import LaunchSpec, TrainingFailed
from components.train.cli import run_holding_failure_output
from components.trainer_command import rank_errors
from tests.train.conftest import REPO_ROOT, tiny_config_data, write_config

TORCHRUN_BLOCK = "Traceback (most recent call last):\\n  File run.py\\nChildFailedError:\\n=====\\nRoot Cause\\n"


def fake_rank(message: str, code: int, rank: int = 0, delay: float = 0.0) -> list[str]:
    """A process that logs, reports `message` as rank `rank` would, then prints torchrun-like noise."""
    return [sys.executable, "-c", textwrap.dedent(f"""
        import os, sys, time
        os.environ["RANK"] = "{rank}"
        from components.trainer_command import rank_errors
        print("step=1 loss=0.7", file=sys.stderr, flush=True)
        time.sleep({delay})
        rank_errors.report({code}, {message!r})
        time.sleep(0.2)
        sys.stderr.write("{TORCHRUN_BLOCK}")
        sys.exit(1)
    """)]


def test_torchruns_block_is_held_back_once_a_rank_said_why(tmp_path, capfd):
    env = {**os.environ, rank_errors.ENV: str(tmp_path), "PYTHONPATH": str(REPO_ROOT)}
    code = run_holding_failure_output(fake_rank("part-1.tfrecord.gz: record 2: ... [label_not_binary]", 1),
                                      env, str(tmp_path))
    err = capfd.readouterr().err
    assert code == 1 and "step=1 loss=0.7" in err  # progress before the failure still shows
    assert "ChildFailedError" not in err and "Traceback" not in err, err
    [cause] = rank_errors.reported(tmp_path)
    assert (cause.rank, cause.exit_code, cause.message) == (0, 1, "part-1.tfrecord.gz: record 2: ... [label_not_binary]")


def test_without_a_report_torchruns_output_is_all_shown(tmp_path, capfd):
    """A rank killed by a signal says nothing: torchrun's block is then the only account."""
    command = [sys.executable, "-c", f"import sys; sys.stderr.write('{TORCHRUN_BLOCK}'); sys.exit(1)"]
    assert run_holding_failure_output(command, dict(os.environ), str(tmp_path)) == 1
    assert "ChildFailedError" in capfd.readouterr().err


def test_a_ranks_own_error_is_the_root_cause_not_the_one_relaying_it():
    own = rank_errors.RankError(1, 1, "gs://b/train/part-3: cannot read TFRecord shard: ...", time=2.0)
    relayed = rank_errors.RankError(0, 1, "train_data: rank 1 failed to read per-rank batch 8 (its error is in "
                                    "its log); stopping every rank", time=1.0)
    crash = rank_errors.RankError(2, 1, "unexpected RuntimeError: Connection closed by peer", 0.5, unexpected=True)
    assert rank_errors.root_cause([relayed, crash, own]) is own
    assert rank_errors.root_cause([relayed, crash]) is crash  # it did not relay anything: the crash is the cause
    assert rank_errors.root_cause([relayed]) is relayed
    assert rank_errors.root_cause([]) is None


@pytest.mark.integration
def test_the_local_launcher_fails_with_the_ranks_line_and_exit_code(tmp_path):
    with pytest.raises(TrainingFailed) as info:
        run_torchrun(LaunchSpec(job_name="j", image="", timeout_s=60),
                     fake_rank("train_data.global_batch_size: 7 is not divisible by 2", 2, delay=0.1),
                     env={"PYTHONPATH": str(REPO_ROOT)})
    assert str(info.value) == "train_data.global_batch_size: 7 is not divisible by 2"
    assert info.value.exit_code == 2


def bad_label_split(tmp_path) -> str:
    """A converted split (2 shards) whose task label `is_favorited` holds 0..9, as `convert --skip-checks` writes it."""
    from components.common.schema import load_schema
    from components.convert import ConvertSettings
    from components.convert import run as convert
    from tests.common.test_contract_corpus import clean_table

    table = clean_table(rows=256)
    index = table.schema.get_field_index("is_favorited")
    field = table.schema.field(index)
    (tmp_path / "raw").mkdir()
    pq.write_table(table.set_column(index, field, pa.array(np.arange(len(table)) % 10, field.type)),
                   tmp_path / "raw" / "part-0.parquet")
    convert(str(tmp_path / "raw"), load_schema("local"), str(tmp_path / "data"),
            ConvertSettings(shards=2, workers=1, eval_fraction=0.0, check_values=False))
    return str(tmp_path / "data" / "train")


@pytest.mark.integration
def test_recap_train_on_two_processes_ends_with_one_line_naming_shard_record_and_column(tmp_path):
    data = tiny_config_data(str(tmp_path / "run"), steps=2, num_eval_steps=0)
    data["train_data"]["inputs"] = bad_label_split(tmp_path)
    config = write_config(tmp_path / "c.yaml", data)
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "OMP_NUM_THREADS": "1", "TF_CPP_MIN_LOG_LEVEL": "2"}
    done = subprocess.run([sys.executable, "-m", "components.cli", "train", f"--config_path={config}",
                           "--nproc_per_node=2"], cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 1, done.stderr[-3000:]  # the README's code for bad data
    # TensorFlow's native start-up lines ("I0000 ... oneDNN custom operations are on ... round-off
    # errors ...", printed on hosts with AVX-512 before absl's logging is set up) are not ours
    errors = [line for line in done.stderr.splitlines()
              if "error" in line.lower() and not re.match(r"[IWEF]\d{4} ", line)]
    assert len(errors) == 1, done.stderr[-3000:]
    assert "Traceback" not in done.stderr and "ChildFailedError" not in done.stderr, done.stderr[-3000:]
    assert errors[0].startswith("recap train: error: ")
    assert "/data/train/part-0000" in errors[0] and ".tfrecord.gz: record " in errors[0]
    assert errors[0].endswith("column 'is_favorited' (feature recap.engagement.is_favorited) "
                              f"has value {errors[0].split('has value ')[1].split(' ')[0]} (labels are 0 or 1) "
                              "[label_not_binary]")
    assert not (tmp_path / "run" / "model").exists()
