"""Build-context benchmark: what BuildKit would upload for the images, in one run.

No Docker engine runs here, so image build times cannot be measured. What can be: the build
context each `docker buildx bake` sends to the builder before any layer is built, and how
the per-Dockerfile ignore file (docker/Dockerfile.dockerignore) changes it:
(a) no ignore file: the whole repository root (venv, runs, git history, tests included);
(b) ours: the allow-list (pyproject.toml, README.md, components/, pipeline/, configs/).
Also times hadolint over the Dockerfile (the lint step of `make test`).

`python -m benchmarks.bench_docker` prints a markdown table and writes results/docker.md.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import time
from pathlib import Path

from tests.docker.build_files import DOCKER_DIR, REPO, build_context

HERE = Path(__file__).resolve().parent
RESULT = HERE / "results" / "docker.md"


def whole_tree(root: Path) -> list[str]:
    out = []
    for dirpath, _dirnames, filenames in os.walk(root):
        rel_dir = os.path.relpath(dirpath, root)
        out.extend(name if rel_dir == "." else f"{rel_dir}/{name}" for name in filenames)
    return out


def size(paths, root: Path) -> int:
    total = 0
    for rel in paths:
        with contextlib.suppress(FileNotFoundError):  # a file removed while walking
            total += (root / rel).lstat().st_size
    return total


def main() -> None:
    start = time.perf_counter()
    everything = whole_tree(REPO)
    walk_all_s = time.perf_counter() - start
    start = time.perf_counter()
    ours = build_context(DOCKER_DIR / "Dockerfile.dockerignore")
    walk_ours_s = time.perf_counter() - start
    all_bytes, our_bytes = size(everything, REPO), size(ours, REPO)

    hadolint = REPO / ".venv" / "bin" / "hadolint"
    start = time.perf_counter()
    subprocess.run([str(hadolint), str(DOCKER_DIR / "Dockerfile")], check=True, capture_output=True)
    lint_s = time.perf_counter() - start

    rows = [
        ("(a) no ignore file: whole repository", len(everything), all_bytes, walk_all_s),
        ("(b) docker/Dockerfile.dockerignore", len(ours), our_bytes, walk_ours_s),
    ]
    lines = [
        "# Docker build context",
        "",
        "| context | files | MiB | walk s |",
        "|---|---:|---:|---:|",
        *[f"| {name} | {files} | {b / 2**20:.2f} | {s:.3f} |" for name, files, b, s in rows],
        "",
        f"Context shrink: {len(everything) / max(len(ours), 1):.0f}x fewer files, "
        f"{all_bytes / max(our_bytes, 1):.0f}x fewer bytes. hadolint on docker/Dockerfile: {lint_s:.2f} s.",
        "Image build times are not measured: this machine has the Docker client but no engine.",
    ]
    text = "\n".join(lines) + "\n"
    RESULT.parent.mkdir(parents=True, exist_ok=True)
    RESULT.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
