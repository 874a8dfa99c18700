"""Run the compiled DAG on this machine through kfp.local (SubprocessRunner, use_venv=False).

The pipeline is compiled to YAML first and that YAML is what runs, so a local run exercises
the same spec a cluster gets. Steps execute as subprocesses in this venv; training uses the
`local` launcher backend (torchrun processes). Large data goes to `root_uri` (a local path or
gs://, e.g. the GCS emulator); KFP's own small artifacts go to a local pipeline root.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import logging
import os
import re
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from components.common import storage
from components.evaluate.constants import METRICS_FILE, REPORT_FILE

log = logging.getLogger(__name__)

_ANSI = re.compile(r"\x1b\[[0-9;]*m")


@dataclass(frozen=True)
class LocalRunResult:
    succeeded: bool
    failed_tasks: tuple[str, ...]  # innermost first, e.g. ("validation-gate", "exit-handler-1")
    run_dir: str  # kfp.local's directory of this run (task outputs)
    validation_report: str | None  # HTML
    validation_passed: bool | None
    evaluation_dir: str | None  # metrics.json, report.html, blessing.json, ...
    report: str | None  # evaluation report HTML
    metrics: str | None  # evaluation metrics.json
    model_uri: str | None  # the exported model (under root_uri)
    blessed: bool | None
    serving_model_uri: str | None  # where push copied the model (only when blessed)
    seconds: float
    logs_dir: str | None = None  # one <task>.log per task that ran
    failure: StepFailure | None = None  # the failing step, its one-line reason and its log

    def to_json(self) -> dict[str, Any]:
        out = {k: (list(v) if isinstance(v, tuple) else v) for k, v in self.__dict__.items()}
        out["failure"] = self.failure.__dict__ if self.failure else None
        return out


@dataclass(frozen=True)
class StepFailure:
    step: str
    reason: str  # one line: the step's error, naming file, row and column where it has them
    log: str  # the step's whole output


class StepLogs(io.TextIOBase):
    """What kfp.local prints (its own lines and each task's output), passed through and split into
    one `<task>.log` per task, between its "Executing task" and "finished with status" lines."""

    def __init__(self, stream: Any, directory: Path) -> None:
        self.stream, self.directory = stream, directory
        self.paths: dict[str, Path] = {}
        self._task: str | None = None
        self._pending = ""

    def write(self, text: str) -> int:
        self.stream.write(text)
        self._pending += text
        *lines, self._pending = self._pending.split("\n")
        for line in lines:
            self._line(line)
        return len(text)

    def flush(self) -> None:
        self.stream.flush()

    def _line(self, line: str) -> None:
        clean = _ANSI.sub("", line)
        started = re.search(r"Executing task '([^']+)'", clean)
        if started:
            self._task = started.group(1)
            self.paths[self._task] = self.directory / f"{self._task}.log"
            self.directory.mkdir(parents=True, exist_ok=True)
        if self._task is not None:
            with open(self.paths[self._task], "a") as handle:
                handle.write(clean + "\n")
        if re.search(r"Task '[^']+' finished with status", clean):
            self._task = None


# The last line of a failing step's log that says why: our errors (as the KFP executor's traceback
# ends), the validation gate's verdict, or any other exception's last line.
_REASON = re.compile(r"^(?:pipeline stopped by data validation: .+|(?:[\w.]+\.)?[A-Z]\w*(?:Error|Failed|Unavailable|"
                     r"Exception|Exit|Dependency)(?:: .+)?|recap \S+: error: .+)$")


# A progress line of our logging or of the KFP executor: not a reason, even when it is the last line.
_PROGRESS = re.compile(r"^(?:\[KFP Executor [^\]]* (?:DEBUG|INFO|WARNING)\]:|\S+ \S+ (?:DEBUG|INFO|WARNING) \S+: )")


def failure_reason(log_text: str) -> str:
    """The one line of a failed step's log that says why it failed."""
    lines = [line.strip() for line in log_text.splitlines() if line.strip()]
    lines = [line for line in lines if not re.search(r"Task '[^']+' finished with status", line)]
    for line in reversed(lines):
        if _REASON.match(line):
            return re.sub(r"^components\.common\.errors\.", "", line)
    if lines and _PROGRESS.match(lines[-1]):  # a process killed mid-work (a preempted pod) says nothing
        return f"the step's process ended without an error message (killed?); its last line: {lines[-1]}"
    return lines[-1] if lines else "(the step printed nothing)"


def step_failure(failed: tuple[str, ...], logs: dict[str, Path]) -> StepFailure | None:
    """The innermost failed task that has a log (kfp.local names the failing task first)."""
    for task in failed:
        path = logs.get(task)
        if path is not None and path.exists():
            return StepFailure(task, failure_reason(path.read_text()), str(path))
    return None


def _import_kfp_local() -> Any:
    """Import kfp.local, not letting the repo's `docker/` folder pose as the `docker` package.

    With the checkout on sys.path (pytest, `python -c`), `import docker` finds our Dockerfile
    folder as a namespace package and kfp.local's optional Docker runner crashes on it
    instead of being skipped; we only use the SubprocessRunner.
    """
    import importlib.util
    import sys

    spec = importlib.util.find_spec("docker") if "docker" not in sys.modules else None
    shadowed = spec is not None and spec.origin is None  # a namespace package, not docker-py
    if shadowed:
        sys.modules["docker"] = None  # type: ignore[assignment]  # makes `import docker` an ImportError
    try:
        from kfp import local
        from kfp.local import task_dispatcher  # noqa: F401  (the module that imports docker)
    finally:
        if shadowed:
            del sys.modules["docker"]
    return local


def _local_pipeline_root(root_uri: str, pipeline_root: str | None) -> str:
    if pipeline_root:
        return str(Path(pipeline_root).resolve())
    if not storage.is_gcs(root_uri):
        return str(Path(root_uri, "kfp").resolve())
    return tempfile.mkdtemp(prefix="recap-kfp-")


def _executor_output(run_dir: Path, task: str) -> dict[str, Any] | None:
    path = run_dir / task / "executor_output.json"
    return json.loads(path.read_text()) if path.exists() else None


def _artifact(output: dict[str, Any] | None, name: str) -> dict[str, Any] | None:
    if not output:
        return None
    artifacts = output.get("artifacts", {}).get(name, {}).get("artifacts", [])
    return artifacts[0] if artifacts else None


def _parameter(output: dict[str, Any] | None, name: str) -> Any:
    return (output or {}).get("parameterValues", {}).get(name)


def collect(run_dir: Path, succeeded: bool, failed: tuple[str, ...], seconds: float) -> LocalRunResult:
    """Read what each task published from kfp.local's executor_output.json files."""
    validate = _executor_output(run_dir, "validate")
    report = _artifact(validate, "report")
    train = _artifact(_executor_output(run_dir, "train"), "model")
    evaluate = _executor_output(run_dir, "evaluate")
    evaluation = _artifact(evaluate, "evaluation")
    evaluation_dir = evaluation["uri"] if evaluation else None
    push = _executor_output(run_dir, "push")
    passed = _parameter(validate, "passed")
    blessed = _parameter(evaluate, "blessed")
    return LocalRunResult(
        succeeded=succeeded,
        failed_tasks=failed,
        run_dir=str(run_dir),
        validation_report=report["uri"] if report else None,
        validation_passed=None if passed is None else bool(passed),
        evaluation_dir=evaluation_dir,
        report=storage.join(evaluation_dir, REPORT_FILE) if evaluation_dir else None,
        metrics=storage.join(evaluation_dir, METRICS_FILE) if evaluation_dir else None,
        model_uri=(train.get("metadata") or {}).get("data_uri") if train else None,
        blessed=None if blessed is None else bool(blessed),
        serving_model_uri=_parameter(push, "serving_model_uri"),
        seconds=seconds,
    )


def run_local(
    raw_uri: str,
    root_uri: str,
    train_config: str,
    *,
    schema: str = "local",
    num_workers: int = 1,
    procs_per_worker: int = 1,
    num_train_steps: int = 0,
    baseline_metrics_uri: str = "",
    validate_config: str = "",
    convert_config: str = "",
    evaluate_config: str = "",
    reference_stats_uri: str = "",
    serving_uri: str = "",
    pipeline_root: str | None = None,
    enable_caching: bool = False,
    extra_params: dict[str, Any] | None = None,
    runner: Any = None,
) -> LocalRunResult:
    """Compile the DAG, run it with kfp.local, and say where the report, metrics and model are.

    `runner`: kfp.local's runner (default: subprocesses in this venv; pipeline/docker_run.py
    gives one that runs every step in its container)."""
    from kfp import components

    from pipeline.dag import PIPELINE_NAME, compile_pipeline

    raw_uri, root_uri = (u if storage.is_gcs(u) else str(Path(u).resolve()) for u in (raw_uri, root_uri))
    kfp_root = _local_pipeline_root(root_uri, pipeline_root)
    os.makedirs(kfp_root, exist_ok=True)
    package = compile_pipeline(os.path.join(kfp_root, "recap_pipeline.yaml"))
    pipeline = components.load_component_from_file(package)
    arguments: dict[str, Any] = {
        "raw_data_uri": raw_uri, "data_root": root_uri, "serving_uri": serving_uri, "train_config": train_config,
        "schema": schema, "validate_config": validate_config, "convert_config": convert_config,
        "evaluate_config": evaluate_config, "reference_stats_uri": reference_stats_uri,
        "num_workers": num_workers, "procs_per_worker": procs_per_worker, "num_train_steps": num_train_steps,
        "train_backend": "local", "baseline_metrics_uri": baseline_metrics_uri, **(extra_params or {}),
    }
    local = _import_kfp_local()
    local.init(runner=runner or local.SubprocessRunner(use_venv=False), pipeline_root=kfp_root, raise_on_error=True,
               enable_caching=enable_caching)
    before = set(Path(kfp_root).glob(f"{PIPELINE_NAME}-*"))
    start = time.monotonic()
    failed: tuple[str, ...] = ()
    step_logs = StepLogs(sys.stdout, Path(kfp_root) / "logs" / time.strftime("%Y%m%d-%H%M%S"))
    with warnings.catch_warnings(), contextlib.redirect_stdout(step_logs):
        # kfp.local warns that our images are not "python" images; steps run in this venv anyway.
        warnings.filterwarnings("ignore", message=".*non-Python base image.*", category=RuntimeWarning)
        # ...and that pod resources and retries mean nothing to local subprocesses.
        warnings.filterwarnings("ignore", message=".*no effect in the current local runner.*")
        try:
            pipeline(**arguments)
        except RuntimeError as exc:
            message = _ANSI.sub("", str(exc))
            if "Inner task failed" not in message:
                raise
            failed = tuple(re.findall(r"'([^']+)'", message.split("Inner task failed:", 1)[1]))
    seconds = time.monotonic() - start
    runs = sorted(set(Path(kfp_root).glob(f"{PIPELINE_NAME}-*")) - before)
    if not runs:
        raise RuntimeError(f"kfp.local wrote no run directory under {kfp_root}")
    result = dataclasses.replace(collect(runs[-1], succeeded=not failed, failed=failed, seconds=seconds),
                                 logs_dir=str(step_logs.directory), failure=step_failure(failed, step_logs.paths))
    log.info("local pipeline run %s in %.1fs: %s", "succeeded" if result.succeeded else "FAILED", seconds,
             json.dumps(result.to_json()))
    return result
