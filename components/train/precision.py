"""bf16 training without per-step weight casts: bf16 weight copies that the optimizer keeps.

Plain bf16 autocast keeps fp32 weights and, every step, casts each of them to bf16 in the
forward pass and casts each bf16 weight gradient back to fp32 in the backward pass: on the
prod model (49 M dense weights) two memory passes of about 6 bytes per weight, which the
matmuls cannot hide on a CPU, ~9% of a bf16 step. Here every `layers.Linear` computes with a
bf16 copy of its weight (a leaf that collects the bf16 gradient) and the fp32 weight is the
master that `MasterWeightAdam` updates chunk by chunk: widen a chunk of the bf16 gradient into a
cache-sized fp32 buffer, run torch's fused Adam kernel on the master's chunk, write the chunk
back to the bf16 copy while it is still in cache.

The numbers are those of autocast + fused Adam: forward uses round_bf16(master) either way; the
gradient is the bf16 matmul's, widened exactly; the update is the same kernel on the same
values. On several ranks the widened chunks are summed and divided by the world size in fp32,
as DDP does with autocast's fp32 gradients (the masters leave DDP: they no longer require grad),
so this reduction is not overlapped with the backward pass.

Not used with gradient accumulation (autocast accumulates micro-batch gradients in fp32; the
bf16 copies would accumulate in bf16) or in the debug loop (it reports fp32 gradient norms).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import NamedTuple

import torch
import torch.distributed as dist
from torch import nn

from components.train.layers import Linear

CHUNK_ELEMENTS = 1 << 20  # 4 MB of fp32 per chunk: fits in L2/L3 next to the Adam state chunks


def use_bf16_weight_copies(model: nn.Module) -> list[Linear]:
    """Make every Linear of `model` compute with a bf16 copy; call before the model is wrapped in DDP."""
    layers = [m for m in model.modules() if isinstance(m, Linear)]
    for layer in layers:
        layer.compute_dtype = torch.bfloat16
        layer.weight.requires_grad_(False)  # the master: updated from the copy's gradient
    return layers


def master_weights(model: nn.Module) -> set[int]:
    """ids of the fp32 weights whose gradients arrive through bf16 copies."""
    return {id(m.weight) for m in model.modules() if isinstance(m, Linear) and m.compute_dtype is not None}


class MasterWeightAdam(torch.optim.Adam):
    """Fused Adam over fp32 parameters; Linear weights get their gradient from their bf16 copy.

    The state of a master weight has Adam's own layout (step, exp_avg, exp_avg_sq) and exists from
    construction, so a checkpoint written with or without bf16 copies loads into either.
    """

    def __init__(self, params: Iterable, layers: Iterable[Linear], **kwargs) -> None:
        super().__init__(params, fused=True, **kwargs)
        self._layers = {id(layer.weight): layer for layer in layers}
        self._scratch: dict[torch.device, torch.Tensor] = {}
        for group in self.param_groups:
            if group["amsgrad"]:
                raise ValueError("MasterWeightAdam does not implement amsgrad")
            for param in group["params"]:
                if id(param) in self._layers:
                    self.state[param] = {
                        "step": torch.zeros((), dtype=torch.float32, device=param.device),
                        "exp_avg": torch.zeros_like(param, memory_format=torch.preserve_format),
                        "exp_avg_sq": torch.zeros_like(param, memory_format=torch.preserve_format),
                    }

    @torch.no_grad()
    def step(self, closure=None):
        loss = super().step(closure)  # parameters with their own .grad; masters have none
        world_size = dist.get_world_size() if dist.is_initialized() else 1
        for group in self.param_groups:
            updated = [(p, self._layers[id(p)]) for p in group["params"] if id(p) in self._layers
                       and self._layers[id(p)].compute_weight is not None
                       and self._layers[id(p)].compute_weight.grad is not None]
            if not updated:
                continue
            steps = [self.state[p]["step"] for p, _ in updated]
            torch._foreach_add_(steps, 1)
            for batch in _chunk_batches(updated, self.state, CHUNK_ELEMENTS):
                self._update(batch, group, world_size)
            for param, layer in updated:
                layer.compute_weight.grad = None
                layer.compute_weight_version = param._version
        return loss

    def _update(self, batch: list[_Segment], group: dict, world_size: int) -> None:
        """One fused Adam call over segments whose total size fits the fp32 scratch buffer."""
        device = batch[0].master.device
        scratch = self._scratch.get(device)
        if scratch is None:
            scratch = self._scratch[device] = torch.empty(CHUNK_ELEMENTS, device=device)
        size = sum(s.master.numel() for s in batch)
        grads = list(scratch[:size].split([s.master.numel() for s in batch]))
        torch._foreach_copy_(grads, [s.grad for s in batch])  # bf16 -> fp32, exact
        if world_size > 1:
            dist.all_reduce(scratch[:size])
            scratch[:size].div_(world_size)
        beta1, beta2 = group["betas"]
        masters = [s.master for s in batch]
        torch._fused_adam_(masters, grads, [s.exp_avg for s in batch], [s.exp_avg_sq for s in batch], [],
                           [s.step for s in batch], lr=group["lr"], beta1=beta1, beta2=beta2,
                           weight_decay=group["weight_decay"], eps=group["eps"], amsgrad=False,
                           maximize=group["maximize"])
        torch._foreach_copy_([s.copy for s in batch], masters)  # fp32 -> bf16 while still in cache


class _Segment(NamedTuple):
    """A flat slice of one master weight with the matching slices of its gradient, state and copy."""

    master: torch.Tensor
    grad: torch.Tensor
    exp_avg: torch.Tensor
    exp_avg_sq: torch.Tensor
    copy: torch.Tensor
    step: torch.Tensor


def _chunk_batches(updated: list[tuple[torch.Tensor, Linear]], state: dict, limit: int) -> Iterator[list[_Segment]]:
    """Cut the weights into segments of at most `limit` elements and pack them into batches of at
    most `limit` elements: big weights go a chunk at a time, small ones many per kernel call."""
    batch: list[_Segment] = []
    filled = 0
    for master, layer in updated:
        copy = layer.compute_weight
        flat = (master.view(-1), copy.grad.reshape(-1), state[master]["exp_avg"].view(-1),
                state[master]["exp_avg_sq"].view(-1), copy.detach().view(-1))
        for start in range(0, flat[0].numel(), limit):
            end = min(start + limit, flat[0].numel())
            if filled + end - start > limit:
                yield batch
                batch, filled = [], 0
            batch.append(_Segment(*(t[start:end] for t in flat), state[master]["step"]))
            filled += end - start
    if batch:
        yield batch
