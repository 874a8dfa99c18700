"""Number formats chosen per device: TF32 and bf16 autocast on GPUs, fp32 on CPUs unless configured.

The TF32 switch is checked here on CPU: torch 2.13 raises on every later fp32 CUDA matmul (and
on reading the matmul precision) once its legacy and new precision settings disagree, so the
setting must leave every view of it readable and in agreement.
"""

from __future__ import annotations

import pytest
import torch

from components.train import numerics
from components.train.config import TrainingConfig

CUDA = torch.device("cuda", 0)
CPU = torch.device("cpu")


def precision_views() -> dict[str, object]:
    """Every way torch 2.13 reports the fp32 matmul/convolution precision (any may raise)."""
    return {
        "cuda.matmul.allow_tf32": torch.backends.cuda.matmul.allow_tf32,
        "cuda.matmul.fp32_precision": torch.backends.cuda.matmul.fp32_precision,
        "cudnn.allow_tf32": torch.backends.cudnn.allow_tf32,
        "cudnn.conv.fp32_precision": torch.backends.cudnn.conv.fp32_precision,
        "float32_matmul_precision": torch.get_float32_matmul_precision(),
        "mkldnn.matmul.fp32_precision": torch.backends.mkldnn.matmul.fp32_precision,
    }


@pytest.fixture
def restore_precision():
    saved = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def test_tf32_on_and_off_keeps_every_precision_view_consistent(restore_precision):
    numerics.set_tf32(True)
    assert precision_views() == {
        "cuda.matmul.allow_tf32": True, "cuda.matmul.fp32_precision": "tf32", "cudnn.allow_tf32": True,
        "cudnn.conv.fp32_precision": "tf32", "float32_matmul_precision": "high",
        "mkldnn.matmul.fp32_precision": "none",  # CPU matmuls stay full fp32
    }
    a = torch.randn(64, 64, dtype=torch.float64)
    assert torch.equal((a.float() @ a.float()), (a.float() @ a.float()))  # fp32 matmuls still run
    numerics.set_tf32(False)
    views = precision_views()
    assert views["cuda.matmul.allow_tf32"] is False and views["cuda.matmul.fp32_precision"] == "ieee"
    assert views["float32_matmul_precision"] == "highest" and views["cudnn.allow_tf32"] is False


def test_only_the_new_setting_would_leave_torch_raising(restore_precision):
    """Why set_tf32 uses the legacy flags: the new property alone breaks the legacy view."""
    torch.backends.cuda.matmul.fp32_precision = "tf32"
    with pytest.raises(RuntimeError, match="mix of the legacy and new APIs"):
        torch.get_float32_matmul_precision()
    numerics.set_tf32(False)  # the legacy setter makes the state consistent again
    assert precision_views()["float32_matmul_precision"] == "highest"


@pytest.mark.parametrize(("device", "expected"), [(CUDA, {"bf16_autocast": True, "tf32": True}),
                                                  (CPU, {"bf16_autocast": False, "tf32": False})])
def test_gpu_defaults_to_tf32_and_bf16_and_cpu_to_fp32(device, expected, restore_precision):
    training = TrainingConfig()
    assert numerics.configure(training, device) == expected
    if device.type == "cuda":
        assert torch.get_float32_matmul_precision() == "high"


def test_the_config_overrides_the_device_default(restore_precision):
    fp32_gpu = TrainingConfig(bf16_autocast=False, tf32=False)
    assert numerics.configure(fp32_gpu, CUDA) == {"bf16_autocast": False, "tf32": False}
    assert torch.get_float32_matmul_precision() == "highest"
    assert numerics.uses_bf16_autocast(TrainingConfig(bf16_autocast=True), CPU)
