"""Images and containers, measured in one run (docker/build.py builds; the engine is this host's).

1. Cold build of the five CPU images (`--no-cache`, concurrently as `make images-local` does:
   every dependency downloaded again; the local base and the torch wheel image are reused),
   then the rebuild of all five after a one-line change in components/ (a copy of the tree).
2. Sizes: each image and its layers' share (base, dependencies, project), the five together with
   shared layers counted once, against a naive single-stage image with every extra (the whole
   context copied, one `pip install .[all extras]`, pip's cache left in; built here only).
3. Start-up per step: `docker run` of the step to its first output line against the same
   command as a subprocess of the venv (median of 3; the command fails fast on a missing input
   after importing everything the step imports).
4. The DAG: `recap pipeline run --runner docker` (data_root on a GCS emulator on loopback)
   against `make run`'s runner (venv subprocesses, local root), same generated data.

`python -m benchmarks.bench_docker [--rows N]` prints markdown and writes results/docker.md.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tests.docker.build_files import build_script as build

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
RESULT = HERE / "results" / "docker.md"
RECAP = Path(sys.executable).parent / "recap"
STEP = {"validate": "validate", "convert": "convert", "launch": "launch", "evaluate": "evaluate",
        "train-cpu": "train"}
# A command per step that imports what the step imports, then fails fast on the missing input.
FAST_FAIL = {
    "validate": ["--input", "/nonexistent", "--schema", "local", "--out", "/tmp/out"],
    "convert": ["--input", "/nonexistent", "--schema", "local", "--out", "/tmp/out"],
    "launch": ["--dry-run", "--config-path", "configs/local.yaml", "--train-data", "x", "--validation-data", "x",
               "--save-dir", "x", "--model-dir", "x", "--run-id", "bench"],
    "evaluate": ["--model", "/nonexistent", "--data", "/nonexistent", "--out", "/tmp/out"],
    "train-cpu": ["--config_path", "/nonexistent.yaml"],
}
NAIVE_DOCKERFILE = """\
ARG PYTHON_IMAGE
ARG TORCH_WHEELS_IMAGE=${PYTHON_IMAGE}
FROM ${TORCH_WHEELS_IMAGE} AS torch-wheels
FROM ${PYTHON_IMAGE}
ARG TORCH_CPU_INDEX=https://download.pytorch.org/whl/cpu
WORKDIR /app
COPY . .
RUN --mount=type=bind,from=torch-wheels,target=/mnt/torch-wheels \\
    python3 -m venv /opt/venv \\
 && /opt/venv/bin/pip install --no-deps --index-url "${TORCH_CPU_INDEX}" torch==2.13.0 \\
 && /opt/venv/bin/pip install -c configs/constraints.txt fbgemm-gpu-cpu==1.8.0 \\
 && /opt/venv/bin/pip install -c configs/constraints.txt --no-deps torchrec==1.8.0 \\
 && /opt/venv/bin/pip install -c configs/constraints.txt ".[validate,convert,train,evaluate,pipeline,launch]"
ENV PATH=/opt/venv/bin:$PATH
ENTRYPOINT ["recap"]
"""


def docker(*args: str, **kwargs) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["docker", *args], capture_output=True, text=True, check=True, **kwargs)


def copy_tree(dest: Path) -> Path:
    for rel in build.build_context() | {"docker/Dockerfile", "docker/Dockerfile.dockerignore"}:
        (dest / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / rel, dest / rel)
    return dest


def timed_build(root: Path, *options: str, wanted: dict[str, str] | None = None) -> tuple[float, dict[str, str]]:
    start = time.perf_counter()
    tags = build.build_images(build.CPU_TARGETS, root, *options, wanted=wanted)
    return time.perf_counter() - start, tags


def layers(tag: str) -> list[tuple[int, str]]:
    out = docker("history", "--no-trunc", "--human=false", "--format", "{{.Size}}\t{{.CreatedBy}}", tag).stdout
    return [(int(size), created) for size, _, created in (line.partition("\t") for line in out.splitlines())][::-1]


def shares(tag: str, base_layers: int) -> dict[str, int]:
    """Bytes of the base, dependency and project layers (bottom to top)."""
    found = layers(tag)
    project = sum(size for size, created in found if "COPY /opt/recap /opt/recap" in created)
    base = sum(size for size, _ in found[:base_layers])
    return {"base": base, "deps": sum(size for size, _ in found) - base - project, "project": project}


def unique_bytes(tags: list[str]) -> int:
    """On-disk size of the images together: a layer shared by several (the same build steps on
    the same parent, i.e. the same history up to it) counted once."""
    seen: dict[tuple, int] = {}
    for tag in tags:
        chain: tuple = ()
        for size, created in layers(tag):
            chain = (*chain, (size, created))
            seen[chain] = size
    return sum(seen.values())


def first_line(argv: list[str]) -> float:
    start = time.perf_counter()
    with subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) as proc:
        proc.stdout.readline()
        elapsed = time.perf_counter() - start
        proc.wait()
    return elapsed


def startup(tags: dict[str, str]) -> dict[str, tuple[float, float]]:
    out = {}
    for target, step in STEP.items():
        container = ["docker", "run", "--rm", "--network", "host", tags[target], *FAST_FAIL[target]]
        venv = [str(RECAP), step, *FAST_FAIL[target]]
        runs = [(first_line(container), first_line(venv)) for _ in range(3)]
        out[target] = (statistics.median(c for c, _ in runs), statistics.median(v for _, v in runs))
    return out


def dag(tags: dict[str, str], rows: int, work: Path) -> tuple[float, float, bool]:
    raw = work / "raw"
    subprocess.run([str(RECAP), "data", "generate", "--schema", "local", "--rows", str(rows), "--files", "4",
                    "--seed", "1", "--out", str(raw)], check=True, capture_output=True)
    start = time.perf_counter()
    subprocess.run([str(RECAP), "pipeline", "run", "--raw", str(raw), "--root", str(work / "venv"), "--summary"],
                   check=True, capture_output=True, cwd=REPO)
    venv_s = time.perf_counter() - start
    start = time.perf_counter()
    containers = subprocess.run([sys.executable, "-m", "pipeline.docker_run", "--raw", str(raw), "--emulator-dir",
                                 str(work / "gcs"), "--", "--summary"], capture_output=True, text=True, cwd=REPO)
    containers_s = time.perf_counter() - start
    return venv_s, containers_s, containers.returncode == 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=200_000, help="rows for the DAG comparison (make run's)")
    args = parser.parse_args()
    os.environ["DOCKER_HOST"] = build.ensure_engine()
    build_args = build.build_args()
    mib = 2**20
    with tempfile.TemporaryDirectory(prefix="bench-docker-", dir="/var/tmp") as tmp:
        work = Path(tmp)
        tree = copy_tree(work / "tree")
        cold_s, tags = timed_build(tree, "--no-cache")
        module = tree / "components" / "__init__.py"
        # unique, so the tags are new and nothing from an earlier run is found ready-made
        module.write_text(module.read_text() + f"# one-line change {time.time_ns()}\n")
        rebuild_s, _ = timed_build(tree)
        naive = "recap-bench-naive:local"
        (work / "naive.Dockerfile").write_text(NAIVE_DOCKERFILE)
        print(f"cold build {cold_s:.0f} s, rebuild after a one-line change {rebuild_s:.1f} s", flush=True)
        argv, env = build.build_command()
        start = time.perf_counter()
        subprocess.run([*argv, "--network", "host", "-f", str(work / "naive.Dockerfile"), "-t", naive,
                        *[f"--build-arg={k}={v}" for k, v in build_args.items() if not k.startswith("_")],
                        str(tree)], env=env, check=True, capture_output=True, timeout=3600)
        naive_s = time.perf_counter() - start
        print(f"naive build {naive_s:.0f} s", flush=True)
        base_layers = len(layers(build_args["PYTHON_IMAGE"]))
        naive_bytes = sum(size for size, _ in layers(naive))
        starts = startup(tags)
        print(f"start-up {starts}", flush=True)
        venv_s, containers_s, dag_ok = dag(tags, args.rows, work)
    rows = []
    for target, tag in tags.items():
        part = shares(tag, base_layers)
        total = sum(part.values())
        rows.append(f"| {target} | {total / mib:.0f} | {part['base'] / mib:.0f} | {part['deps'] / mib:.0f} | "
                    f"{part['project'] / mib:.1f} | {total / naive_bytes:.0%} |")
    together = unique_bytes(list(tags.values()))
    lines = [
        "## Docker images and containers",
        "",
        "| image | MiB | base | dependencies | project | of naive |",
        "|---|---:|---:|---:|---:|---:|",
        *rows,
        f"| all five, shared layers once | {together / mib:.0f} | | | | {together / (5 * naive_bytes):.0%} of 5 naive |",
        f"| naive single stage, every extra | {naive_bytes / mib:.0f} | | | | 100% |",
        "",
        "| build | seconds |",
        "|---|---:|",
        f"| cold, five CPU images (`--no-cache`, concurrent) | {cold_s:.0f} |",
        f"| rebuild of all five after a one-line change in components/ | {rebuild_s:.1f} |",
        f"| naive single-stage image, cold | {naive_s:.0f} |",
        "",
        "| step | container to first line, s | venv subprocess, s | ratio |",
        "|---|---:|---:|---:|",
        *[f"| {t} | {c:.2f} | {v:.2f} | {c / v:.2f}x |" for t, (c, v) in starts.items()],
        "",
        f"DAG on {args.rows:,} generated rows: venv subprocesses (`make run`) {venv_s:.0f} s, every step in its "
        f"container with data_root on the GCS emulator (`make run-containers`) {containers_s:.0f} s: "
        f"**{containers_s / venv_s:.2f}x**" + ("" if dag_ok else " (the container run FAILED)") + ".",
        "The base layer is the local stand-in for python:3.11-slim (Debian bookworm, debootstrap); "
        "evaluate and train-cpu share one torch + TensorFlow layer, validate/convert/launch one kfp layer.",
    ]
    text = "\n".join(lines) + "\n"
    docker("rmi", naive)
    RESULT.parent.mkdir(parents=True, exist_ok=True)
    RESULT.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
