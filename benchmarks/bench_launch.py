"""Launcher benchmark: the stock kubeflow-training SDK flow vs `components.launch.cluster`, in one run.

Both drive the same loopback Kubernetes API (tests/launch/fake_k8s.py) with a fixed latency
per request, as a remote API server has. Measured:
(a) timeout accuracy: a job stuck in Running, a 2 s timeout, 0.25 s polling. The SDK's
    `wait_for_job_conditions(wait_timeout=...)` counts polls, not time, so every request's
    latency adds to the wait; ours stops at the deadline (then explains and deletes);
(b) a successful job: wall time and API calls (ours also lists the pods on every poll, so a
    failure is explained even after the operator deleted them, and adds one DELETE);
(c) a failed job (OOMKilled, backoffLimit 0): what the error says and whether the job is left behind.

`python -m benchmarks.bench_launch` prints a markdown table and writes results/launch.md.
"""

from __future__ import annotations

import contextlib
import io
import platform
import tempfile
import time
from pathlib import Path

from components.launch.cluster import make_client, run_pytorchjob
from components.launch.pytorchjob import build_pytorchjob
from components.launch.spec import LaunchSpec, LaunchTimeout, TrainingFailed
from tests.launch.fake_k8s import RUNS_FOREVER, SUCCEEDS, FakeKubernetes, crash_loop

HERE = Path(__file__).resolve().parent
RESULT = HERE / "results" / "launch.md"
LATENCY_S = 0.15
TIMEOUT_S = 2.0
POLL_S = 0.25
COMMAND = ["torchrun", "--nnodes=2", "--nproc_per_node=1", "-m", "components.train", "--config_path=c.yaml"]


def spec(timeout_s: float = TIMEOUT_S) -> LaunchSpec:
    # backoff_limit 0: the operator fails the job at the first container restart
    return LaunchSpec(job_name="recap-train-bench", image="r/recap-train:1", num_workers=2, backoff_limit=0,
                      timeout_s=timeout_s, poll_interval_s=POLL_S)


def stock(script, tmp: str, timeout_s: float) -> tuple[float, str, int, bool]:
    """The SDK as its docs show it: create_job, wait_for_job_conditions, delete_job."""
    with FakeKubernetes(scenario=script, latency_s=LATENCY_S) as fake:
        client = make_client("kubeflow", fake.kubeconfig(f"{tmp}/kc-stock"))
        start = time.monotonic()
        outcome = "Succeeded"
        try:
            with contextlib.redirect_stdout(io.StringIO()):  # the SDK prints a status table
                client.create_job(job=build_pytorchjob(spec(timeout_s), COMMAND), namespace="kubeflow")
                client.wait_for_job_conditions("recap-train-bench", namespace="kubeflow",
                                               wait_timeout=timeout_s, polling_interval=POLL_S)
                client.delete_job("recap-train-bench", namespace="kubeflow")
        except (TimeoutError, RuntimeError) as exc:
            outcome = f"{type(exc).__name__}: {str(exc)[:60]}..."
        return time.monotonic() - start, outcome, len(fake.calls), bool(fake.jobs)


def ours(script, tmp: str, timeout_s: float) -> tuple[float, str, int, bool]:
    with FakeKubernetes(scenario=script, latency_s=LATENCY_S) as fake:
        kubeconfig = fake.kubeconfig(f"{tmp}/kc-ours")
        start = time.monotonic()
        outcome = "Succeeded"
        try:
            run_pytorchjob(spec(timeout_s), COMMAND, kubeconfig=kubeconfig)
        except (LaunchTimeout, TrainingFailed) as exc:
            first, *rest = str(exc).splitlines()
            detail = next((line.strip() for line in rest if "terminated" in line), "")
            outcome = f"{type(exc).__name__}: {detail or first}"[:90]
        return time.monotonic() - start, outcome, len(fake.calls), bool(fake.jobs)


def main() -> None:
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for label, script, timeout_s in (("stuck job, 2 s timeout", RUNS_FOREVER, TIMEOUT_S),
                                         ("successful job", SUCCEEDS, 30.0),
                                         ("failed job (OOMKilled)", crash_loop(every=2), 30.0)):
            s_sec, s_out, s_calls, s_left = stock(script, tmp, timeout_s)
            o_sec, o_out, o_calls, o_left = ours(script, tmp, timeout_s)
            rows.append((label, s_sec, o_sec, s_calls, o_calls, s_left, o_left, s_out, o_out))
    lines = [
        f"## Launcher: stock SDK flow vs ours ({LATENCY_S * 1000:.0f} ms per API request, poll {POLL_S} s)",
        "",
        f"Machine: {platform.processor() or platform.machine()}, shared and noisy; compare within a row.",
        "",
        "| scenario | stock s | ours s | ratio | API calls stock/ours | job left behind stock/ours |",
        "|---|---|---|---|---|---|",
    ]
    for label, s_sec, o_sec, s_calls, o_calls, s_left, o_left, _, _ in rows:
        lines.append(f"| {label} | {s_sec:.2f} | {o_sec:.2f} | {o_sec / s_sec:.2f} | {s_calls}/{o_calls} | "
                     f"{'yes' if s_left else 'no'}/{'yes' if o_left else 'no'} |")
    lines += ["", "| scenario | stock outcome | our outcome |", "|---|---|---|"]
    lines += [f"| {r[0]} | {r[7]} | {r[8]} |" for r in rows]
    lines += ["", f"Timeout overshoot beyond {TIMEOUT_S:g} s: stock {rows[0][1] - TIMEOUT_S:+.2f} s, "
                  f"ours {rows[0][2] - TIMEOUT_S:+.2f} s (ours includes listing pods, reading logs and the DELETE)."]
    table = "\n".join(lines) + "\n"
    print(table)
    RESULT.parent.mkdir(parents=True, exist_ok=True)
    RESULT.write_text(table)


if __name__ == "__main__":
    main()
