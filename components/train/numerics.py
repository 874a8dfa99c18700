"""Number formats of a training process: bf16 autocast and TF32, chosen for its device.

On an NVIDIA GPU the fp32 matmuls run several times faster in TF32 (10-bit mantissa inputs,
fp32 accumulation) and bf16 autocast again faster, so both are the GPU default; a CPU stays
in fp32 unless the config says otherwise. Both change the numbers against a CPU run: compare
GPU results with a tolerance, never bit for bit.
"""

from __future__ import annotations

import torch

from components.train.config import TrainingConfig


def uses_bf16_autocast(training: TrainingConfig, device: torch.device) -> bool:
    if training.bf16_autocast is not None:
        return training.bf16_autocast
    return device.type == "cuda"


def uses_tf32(training: TrainingConfig, device: torch.device) -> bool:
    if training.tf32 is not None:
        return training.tf32
    return device.type == "cuda"


def set_tf32(enabled: bool) -> None:
    """TF32 on or off for cuBLAS matmuls and cuDNN convolutions, through the legacy flags only.

    torch 2.13 keeps two sets of switches: the legacy `allow_tf32` flags and the newer
    `fp32_precision` properties. Setting only a new one (e.g. `torch.backends.cuda.matmul.
    fp32_precision = "tf32"`) while the legacy flag keeps its default leaves them "mixed", and
    from then on reading the legacy flag or `torch.get_float32_matmul_precision()` raises, as
    does a CUDA fp32 matmul, which consults it. The legacy setters update both views
    consistently, and leave CPU (mkldnn) matmuls in full fp32, which
    `torch.set_float32_matmul_precision("high")` would not.
    """
    torch.backends.cuda.matmul.allow_tf32 = enabled
    torch.backends.cudnn.allow_tf32 = enabled


def configure(training: TrainingConfig, device: torch.device) -> dict[str, bool]:
    """Apply the device's number formats to this process; returns what was chosen (for the log)."""
    tf32 = uses_tf32(training, device)
    if device.type == "cuda" or training.tf32 is not None:
        set_tf32(tf32)
    return {"bf16_autocast": uses_bf16_autocast(training, device), "tf32": tf32 and device.type == "cuda"}
