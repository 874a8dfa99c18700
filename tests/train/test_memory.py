"""Large per-step allocations (gradients of the biggest weights) reuse memory across steps."""

from __future__ import annotations

import os
import platform
import subprocess
import sys

import pytest

from tests.train.conftest import REPO_ROOT

# One "step": a 48 MB fp32 tensor (over glibc's 32 MB mmap ceiling, like the prod MLP's
# 33.5 MB gradient) written and freed; prints the mean minor page faults per step after a
# warm-up. Untuned, every step faults the whole block in again (12288 pages).
SCRIPT = """
import resource, sys, torch
from components.train.loop import reuse_large_allocations
applied = reuse_large_allocations() if sys.argv[1] == "tuned" else False
def step():
    x = torch.empty(12 * 2**20)
    x.fill_(1.0)
    del x
step()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(20):
    step()
print(applied, (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 20)
"""


def faults_per_step(mode: str) -> tuple[bool, float]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_") and k != "GLIBC_TUNABLES"}
    env["PYTHONPATH"] = str(REPO_ROOT)
    done = subprocess.run([sys.executable, "-c", SCRIPT, mode], cwd=REPO_ROOT, env=env,
                          capture_output=True, text=True, check=True, timeout=120)
    applied, faults = done.stdout.split()
    return applied == "True", float(faults)


@pytest.mark.integration
@pytest.mark.skipif(platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="glibc only")
def test_freed_gradient_memory_is_reused_by_the_next_step():
    applied, faults = faults_per_step("tuned")
    assert applied
    # The heap may still grow once or twice (a small allocation landing in the freed block),
    # but most steps must reuse the pages instead of faulting 12288 of them in again.
    assert faults < 12288 / 4, f"{faults:.0f} page faults per step: the 48 MB block is mapped afresh"
