"""`recap pipeline run` splits kfp.local's output into one log per task and finds a failed step's one-line reason."""

from __future__ import annotations

import io

from pipeline.local_run import StepLogs, failure_reason, step_failure

CONVERT_OUTPUT = """\
05:07:43.368 - INFO - Executing task \x1b[96m'convert'\x1b[0m
    Traceback (most recent call last):
      File "/x/kfp/dsl/executor_main.py", line 109, in main
    components.common.errors.DataError: /raw/part-1.parquet: row 2: column 'is_bookmarked' has value 2 (labels are 0 or 1) [label_not_binary]

05:07:43.759 - ERROR - Task \x1b[96m'convert'\x1b[0m finished with status \x1b[91mFAILURE\x1b[0m
05:07:43.763 - INFO - Executing task \x1b[96m'delete-training-job'\x1b[0m
    nothing to delete
05:07:44.339 - INFO - Task \x1b[96m'delete-training-job'\x1b[0m finished with status \x1b[92mSUCCESS\x1b[0m
"""


def test_each_task_gets_its_log_and_the_failure_its_one_line_reason(tmp_path):
    passed = io.StringIO()
    logs = StepLogs(passed, tmp_path / "logs")
    for piece in (CONVERT_OUTPUT[:50], CONVERT_OUTPUT[50:]):  # writes need not end on a line
        logs.write(piece)
    assert passed.getvalue() == CONVERT_OUTPUT  # the console still sees everything
    assert sorted(logs.paths) == ["convert", "delete-training-job"]
    assert "nothing to delete" not in logs.paths["convert"].read_text()
    failure = step_failure(("convert", "exit-handler-1"), logs.paths)
    assert failure.step == "convert" and failure.log == str(logs.paths["convert"])
    assert failure.reason == ("DataError: /raw/part-1.parquet: row 2: column 'is_bookmarked' has value 2 "
                              "(labels are 0 or 1) [label_not_binary]")


def test_reason_of_the_validation_gate_and_of_an_unknown_crash():
    gate = "    2 validation error(s) in /raw; first: ...\n    pipeline stopped by data validation: 2 validation error(s)\n"
    assert failure_reason(gate) == "pipeline stopped by data validation: 2 validation error(s)"
    assert failure_reason("working\nSegmentation fault (core dumped)\n") == "Segmentation fault (core dumped)"


def test_a_step_killed_mid_work_is_not_blamed_on_its_last_progress_line():
    killed = ("    [KFP Executor 2026-12-02 08:00:59,948 INFO]: convert input=gs://b/raw files=2 rows=20000\n"
              "    2026-12-02 08:00:59,948 INFO components.convert.convert: convert input=gs://b/raw files=2\n")
    reason = failure_reason(killed)
    assert reason.startswith("the step's process ended without an error message (killed?); its last line: ")
    assert reason.endswith("INFO components.convert.convert: convert input=gs://b/raw files=2")
