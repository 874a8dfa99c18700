"""The native master-weight Adam kernel (csrc/master_adam.c): built with the machine's C compiler
on first use, loaded with ctypes, and optional: without it precision.MasterWeightAdam composes the
same update from torch kernels, bit for bit the same, 1-3% slower per prod bf16 step on this
project's 2-core CPU benchmark (the two paths alternated step by step in one process).

Where the library comes from, in order:
1. `$RECAP_NATIVE_DIR/<name>` if present (the train image builds it there at image build time:
   `python -m components.train.native`);
2. `$RECAP_NATIVE_DIR`, else `$XDG_CACHE_HOME/recap-pipeline/native` (~/.cache/...), built there
   with `$CC` or `cc`, which takes under a second; concurrent ranks each build to a private file
   and rename it into place;
3. nowhere: no compiler, not x86-64, a CPU without AVX2 + FMA, or `RECAP_NATIVE_ADAM=0`. One
   warning says why and training goes on with the torch path.
<name> hashes the source and the compiler flags, so a changed kernel never loads a stale build.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import logging
import math
import os
import platform
import shlex
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

import torch

log = logging.getLogger(__name__)

SOURCE = Path(__file__).resolve().parent / "csrc" / "master_adam.c"
# No -march: the kernel carries its own x86-64-v4 / v3 clones. -ffp-contract=off: no fused
# multiply-add the source does not spell out, or the bits would stop matching torch's Adam.
FLAGS = ("-O3", "-ffp-contract=off", "-fno-math-errno", "-fPIC", "-shared", "-pthread")


class AdamHyper(ctypes.Structure):
    """One tensor's Adam constants, as torch's fused kernel rounds them to float (adam_hyper in C)."""

    _fields_ = [("lerp_weight", ctypes.c_float), ("beta2", ctypes.c_float), ("sq_weight", ctypes.c_float),
                ("bias_correction2_sqrt", ctypes.c_float), ("eps", ctypes.c_float),
                ("neg_step_size", ctypes.c_float), ("weight_decay", ctypes.c_float), ("maximize", ctypes.c_int32)]

    @classmethod
    def for_step(cls, group: dict, step: float) -> AdamHyper:
        """The constants of torch.optim.Adam's fused CPU kernel at `step`, computed in double as it does."""
        beta1, beta2 = group["betas"]
        bias_correction1 = 1 - beta1**step
        bias_correction2 = 1 - beta2**step
        return cls(1 - beta1, beta2, 1 - beta2, math.sqrt(bias_correction2), group["eps"],
                   -(group["lr"] / bias_correction1), group["weight_decay"], int(bool(group["maximize"])))


class MasterAdamKernel:
    """recap_master_adam_bf16: fp32 masters, bf16 gradients and copies, fp32 Adam state, in place."""

    def __init__(self, library: ctypes.CDLL, path: Path) -> None:
        self.path = path
        self._update = library.recap_master_adam_bf16
        pointers = ctypes.POINTER(ctypes.c_void_p)
        self._update.argtypes = [ctypes.c_int64, ctypes.POINTER(ctypes.c_int64), pointers, pointers, pointers,
                                 pointers, pointers, ctypes.POINTER(AdamHyper), ctypes.c_int32]
        self._update.restype = None

    def update(self, masters: Sequence[torch.Tensor], grads: Sequence[torch.Tensor], exp_avgs: Sequence[torch.Tensor],
               exp_avg_sqs: Sequence[torch.Tensor], copies: Sequence[torch.Tensor], hypers: Sequence[AdamHyper],
               threads: int) -> None:
        count = len(masters)
        for name, tensors, dtype in (("master", masters, torch.float32), ("gradient", grads, torch.bfloat16),
                                     ("exp_avg", exp_avgs, torch.float32), ("exp_avg_sq", exp_avg_sqs, torch.float32),
                                     ("copy", copies, torch.bfloat16)):
            if len(tensors) != count:
                raise ValueError(f"master Adam kernel: {len(tensors)} {name} tensors for {count} masters")
            for master, tensor in zip(masters, tensors, strict=True):
                if (tensor.dtype != dtype or tensor.device.type != "cpu" or not tensor.is_contiguous()
                        or tensor.numel() != master.numel()):
                    raise ValueError(f"master Adam kernel: {name} must be a contiguous CPU {dtype} tensor of "
                                     f"{master.numel()} elements, got {tensor.dtype} {tuple(tensor.shape)} "
                                     f"on {tensor.device}")
        if len(hypers) != count:
            raise ValueError(f"master Adam kernel: {len(hypers)} hyperparameter sets for {count} masters")

        def addresses(tensors: Sequence[torch.Tensor]):
            return (ctypes.c_void_p * count)(*(t.data_ptr() for t in tensors))

        self._update(count, (ctypes.c_int64 * count)(*(m.numel() for m in masters)), addresses(masters),
                     addresses(grads), addresses(exp_avgs), addresses(exp_avg_sqs), addresses(copies),
                     (AdamHyper * count)(*hypers), threads)


def library_name() -> str:
    """Named by the source and flags: an image's prebuilt copy is found whatever compiler made it."""
    digest = hashlib.sha256(SOURCE.read_bytes() + " ".join(FLAGS).encode()).hexdigest()[:16]
    return f"master_adam-{digest}.so"


def _compiler() -> str | None:
    for candidate in (os.environ.get("CC"), "cc", "gcc"):
        if candidate and shutil.which(shlex.split(candidate)[0]):
            return candidate
    return None


def _cache_dir() -> Path:
    if os.environ.get("RECAP_NATIVE_DIR"):
        return Path(os.environ["RECAP_NATIVE_DIR"])
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "recap-pipeline" / "native"


def build(directory: Path, compiler: str) -> Path:
    """Compile the kernel into `directory` (a private file renamed into place); return its path."""
    directory.mkdir(parents=True, exist_ok=True)
    target = directory / library_name()
    if target.exists():
        return target
    handle, scratch = tempfile.mkstemp(prefix=".master_adam-", suffix=".so", dir=directory)
    os.close(handle)
    try:
        result = subprocess.run([*shlex.split(compiler), *FLAGS, str(SOURCE), "-o", scratch],
                                capture_output=True, text=True, timeout=300, check=False)
        if result.returncode != 0:
            raise RuntimeError(f"{compiler} exited with {result.returncode}: {result.stderr.strip()[-2000:]}")
        os.replace(scratch, target)
    finally:
        if os.path.exists(scratch):
            os.unlink(scratch)
    return target


@functools.cache
def master_adam_kernel() -> MasterAdamKernel | None:
    """The kernel, or None (with one warning saying why) when it cannot be had here."""
    if os.environ.get("RECAP_NATIVE_ADAM", "1").strip().lower() in ("0", "false", "no", "off"):
        return None
    if platform.machine().lower() not in ("x86_64", "amd64") or not sys.platform.startswith("linux"):
        log.info("native master Adam: x86-64 Linux only; using the torch kernels")
        return None
    compiler = _compiler()
    directory = _cache_dir()
    prebuilt = directory / library_name()
    try:
        if prebuilt.exists():
            path = prebuilt
        elif compiler is None:
            log.warning("native master Adam: no C compiler (set CC, or install cc); using the torch kernels, "
                        "1-3%% slower per bf16 step")
            return None
        else:
            path = build(directory, compiler)
        library = ctypes.CDLL(str(path))
    except (OSError, RuntimeError, subprocess.TimeoutExpired) as error:
        log.warning("native master Adam unavailable (%s); using the torch kernels", error)
        return None
    if not library.recap_master_adam_supported():
        log.info("native master Adam: this CPU has no AVX2 + FMA; using the torch kernels")
        return None
    log.info("native master Adam kernel: %s", path)
    return MasterAdamKernel(library, path)


def main() -> None:
    """Build the kernel into $RECAP_NATIVE_DIR (or the user cache), e.g. while building an image."""
    compiler = _compiler()
    if compiler is None:
        sys.exit("no C compiler found: set CC or install cc")
    print(build(_cache_dir(), compiler))


if __name__ == "__main__":
    main()
