"""Building blocks of the Heavy Ranker: global batch norm, MLP, MaskBlock and MaskNet."""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import nn

from components.ranker.config import BatchNormConfig, MaskNetConfig, MlpConfig


def _world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


class _AllReduceSum(torch.autograd.Function):
    """Sum over ranks; the gradient of a sum over ranks is the sum of the ranks' gradients."""

    @staticmethod
    def forward(ctx, tensor: torch.Tensor) -> torch.Tensor:
        out = tensor.clone()
        dist.all_reduce(out)
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.clone()
        dist.all_reduce(grad)
        return grad


class GlobalBatchNorm1d(nn.BatchNorm1d):
    """BatchNorm1d whose training statistics cover the global batch, i.e. every rank's rows.

    torch's SyncBatchNorm refuses CPU tensors; this one all-reduces (sum, sum of squares,
    count) with an autograd-aware collective on any backend, so 1 and N ranks compute the
    same normalization for the same global batch. Statistics are float32 even under bf16.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or _world_size() == 1:  # nothing to share: torch's fused kernel
            return super().forward(x)
        dtype = x.dtype
        x = x.float()
        width = x.shape[1]
        stats = torch.cat([x.sum(0), (x * x).sum(0), x.new_full((1,), x.shape[0])])
        stats = _AllReduceSum.apply(stats)
        count = stats[-1]
        mean = stats[:width] / count
        var = (stats[width : 2 * width] / count - mean * mean).clamp_min(0)
        if self.track_running_stats and self.running_mean is not None:
            with torch.no_grad():
                unbiased = var * (count / (count - 1).clamp_min(1))
                self.running_mean.lerp_(mean.detach(), self.momentum)
                self.running_var.lerp_(unbiased.detach(), self.momentum)
                self.num_batches_tracked += 1
        out = (x - mean) * torch.rsqrt(var + self.eps)
        if self.affine:
            out = out * self.weight + self.bias
        return out.to(dtype)


def batch_norm(width: int, config: BatchNormConfig, sync: bool) -> nn.BatchNorm1d:
    cls = GlobalBatchNorm1d if sync else nn.BatchNorm1d
    return cls(width, affine=config.affine, momentum=config.momentum)


class Linear(nn.Linear):
    """nn.Linear that can compute with a lower-precision copy of its weight kept between steps.

    Under bf16 autocast every forward casts every fp32 weight to bf16 and every backward casts
    the bf16 weight gradient back to fp32: two passes over the whole model per step, 5-8% of
    the prod model's bf16 step. With `compute_dtype` set, forward and backward use
    `compute_weight`, a bf16 leaf that collects the bf16 gradient, and the fp32 `weight` stays
    the master the optimizer updates (components/train/precision.py), which then refreshes the
    copy while the values are in cache. The copy is refreshed when `weight` changed outside that
    optimizer: in-place writes (a checkpoint load, copy_) bump its version counter and a new
    tensor (`weight.data = t`) has a new address; writes through `weight.data` are invisible to
    both, so code doing those must set `compute_weight = None`. State dicts, exports and
    evaluation only ever see the fp32 `weight`.
    """

    compute_dtype: torch.dtype | None = None
    compute_weight: torch.Tensor | None = None
    compute_weight_version: tuple[int, int] = (-1, 0)  # (weight._version, weight.data_ptr()) copied from

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.compute_dtype is None:
            return super().forward(x)
        weight = self.current_compute_weight()
        bias = None if self.bias is None else self.bias.to(self.compute_dtype)
        return nn.functional.linear(x.to(self.compute_dtype), weight, bias)

    def current_compute_weight(self) -> torch.Tensor:
        if self.compute_weight is None or self.compute_weight.device != self.weight.device:
            with torch.inference_mode(False):  # a copy made during inference must still train later
                self.compute_weight = self.weight.detach().to(self.compute_dtype).requires_grad_()
        elif self.compute_weight_version != self.weight_version():
            with torch.no_grad():
                self.compute_weight.copy_(self.weight)
        self.compute_weight_version = self.weight_version()
        return self.compute_weight

    def weight_version(self) -> tuple[int, int]:
        return self.weight._version, self.weight.data_ptr()


def linear(in_features: int, out_features: int) -> Linear:
    """Linear with xavier-uniform weights and zero bias, as in the original."""
    layer = Linear(in_features, out_features)
    nn.init.xavier_uniform_(layer.weight)
    nn.init.zeros_(layer.bias)
    return layer


class Mlp(nn.Sequential):
    """Linear -> [BatchNorm] -> ReLU -> [Dropout] per layer; the last layer's activation optional."""

    def __init__(self, in_features: int, config: MlpConfig, sync_batch_norm: bool = True) -> None:
        layers: list[nn.Module] = []
        width = in_features
        for index, size in enumerate(config.layer_sizes):
            layers.append(linear(width, size))
            is_last = index == len(config.layer_sizes) - 1
            if not is_last or config.final_layer_activation:
                if config.batch_norm is not None:
                    layers.append(batch_norm(size, config.batch_norm, sync_batch_norm))
                layers.append(nn.ReLU())
                if config.dropout:
                    layers.append(nn.Dropout(config.dropout))
            width = size
        super().__init__(*layers)
        self.out_features = width


class MaskBlock(nn.Module):
    """out = LayerNorm(Linear(LayerNorm?(net) * mask(mask_input))), the mask an instance-guided gate.

    mask = Linear -> ReLU -> Linear from the mask input's width to the width of `net`. In a
    parallel MaskNet both are the network input; stacked, `net` is the previous block's output
    while the mask still reads the network input (the paper's instance-guided mask).
    """

    def __init__(self, in_features: int, mask_input_features: int, aggregation_size: int, output_size: int,
                 input_layer_norm: bool) -> None:
        super().__init__()
        self.input_layer_norm = nn.LayerNorm(in_features) if input_layer_norm else nn.Identity()
        self.mask = nn.Sequential(linear(mask_input_features, aggregation_size), nn.ReLU(),
                                  linear(aggregation_size, in_features))
        self.hidden = linear(in_features, output_size)
        self.layer_norm = nn.LayerNorm(output_size)

    def forward(self, net: torch.Tensor, mask_input: torch.Tensor) -> torch.Tensor:
        return self.layer_norm(self.hidden(self.input_layer_norm(net) * self.mask(mask_input)))


class MaskNet(nn.Module):
    """MaskNet (Wang et al., arXiv 2102.07619): parallel blocks concatenated, or stacked; then an MLP.

    Every block's mask reads the network input; stacked blocks chain only their `net`.
    """

    def __init__(self, in_features: int, config: MaskNetConfig, sync_batch_norm: bool = True) -> None:
        super().__init__()
        self.use_parallel = config.use_parallel
        blocks = []
        width = in_features
        for block in config.mask_blocks:
            net_width = in_features if config.use_parallel else width
            blocks.append(MaskBlock(net_width, in_features, block.aggregation_size, block.output_size,
                                    block.input_layer_norm))
            width = block.output_size
        self.blocks = nn.ModuleList(blocks)
        width = sum(b.output_size for b in config.mask_blocks) if config.use_parallel else width
        self.mlp = Mlp(width, config.mlp, sync_batch_norm) if config.mlp else None
        self.out_features = self.mlp.out_features if self.mlp else width

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.use_parallel:
            out = torch.cat([block(x, x) for block in self.blocks], dim=1)
        else:
            out = x
            for block in self.blocks:
                out = block(out, x)
        return self.mlp(out) if self.mlp is not None else out


def double_norm_log(continuous: torch.Tensor, norm: nn.Module, clip: float) -> torch.Tensor:
    """Non-finite -> 0, sign(x) * log1p(|x|), batch norm, clamp to +-clip."""
    x = torch.where(torch.isfinite(continuous), continuous, torch.zeros_like(continuous))
    x = torch.sign(x) * torch.log1p(x.abs())
    return norm(x).clamp(-clip, clip)

