"""bf16 training without per-step weight casts: bf16 weight copies that the optimizer keeps.

Plain bf16 autocast keeps fp32 weights and, every step, casts each of them to bf16 in the
forward pass and casts each bf16 weight gradient back to fp32 in the backward pass: on the
prod model (49 M dense weights) two memory passes of about 6 bytes per weight, which the
matmuls cannot hide on a CPU: 5-8% of a bf16 step measured. Here every `layers.Linear` computes with a
bf16 copy of its weight (a leaf that collects the bf16 gradient) and the fp32 weight is the
master that `MasterWeightAdam` updates chunk by chunk: widen a chunk of the bf16 gradient into a
cache-sized fp32 buffer, run torch's fused Adam kernel on the master's chunk, write the chunk
back to the bf16 copy while it is still in cache.

The numbers are those of autocast + fused Adam: forward uses round_bf16(master) either way; the
gradient is the bf16 matmul's, widened exactly; the update is the same kernel on the same
values. On several ranks the widened chunks are summed in fp32 and divided by the world size
(DDP divides first, then sums: the same numbers when the world size is a power of two); the
masters leave DDP (they no longer require grad), so this reduction runs after the backward pass
instead of overlapping it, which is why multi-GPU runs leave the copies off unless asked
(TrainingConfig.bf16_weight_copies).

Not used with gradient accumulation (autocast accumulates micro-batch gradients in fp32; the
bf16 copies would accumulate in bf16) or in the debug loop (it reports fp32 gradient norms).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import NamedTuple

import torch
import torch.distributed as dist
from torch import nn

from components.ranker.layers import Linear
from components.train.distributed import every_rank

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
        self._plans: dict[int, tuple[tuple, list[_Batch]]] = {}  # per param group, rebuilt when tensors change
        for group in self.param_groups:
            unsupported = [k for k in ("amsgrad", "capturable", "differentiable", "decoupled_weight_decay", "foreach")
                           if group.get(k)]
            if unsupported:
                raise ValueError(f"MasterWeightAdam does not implement {', '.join(unsupported)}")
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
        updates = []
        for group in self.param_groups:
            layers = [self._layers[id(p)] for p in group["params"] if id(p) in self._layers]
            updates.append([(layer.weight, layer) for layer in layers
                            if layer.compute_weight is not None and layer.compute_weight.grad is not None])
        if world_size > 1 and self._layers:
            _same_on_every_rank(sum(p.numel() for updated in updates for p, _ in updated))
        for index, (group, updated) in enumerate(zip(self.param_groups, updates, strict=True)):
            if not updated:
                continue
            for batch in self._plan(index, updated):
                self._update(batch, group, world_size)
            for _, layer in updated:
                layer.compute_weight.grad = None
                layer.compute_weight_version = layer.weight_version()
        return loss

    def _plan(self, index: int, updated: list[tuple[torch.Tensor, Linear]]) -> list[_Batch]:
        """The group's batches, cached: building ~100 views per step costs milliseconds of Python.

        The key holds the tensors themselves (compared with `is`): ids of freed tensors are reused.
        """
        key = [(p, layer.compute_weight, self.state[p]["exp_avg"], self.state[p]["exp_avg_sq"]) for p, layer in updated]
        cached = self._plans.get(index)
        if cached is None or len(cached[0]) != len(key) or any(
                a is not b for old, new in zip(cached[0], key, strict=True) for a, b in zip(old, new, strict=True)):
            device = updated[0][0].device
            if device not in self._scratch:
                self._scratch[device] = torch.empty(CHUNK_ELEMENTS, device=device)
            cached = self._plans[index] = (key, _plan_batches(updated, self.state, self._scratch[device]))
        return cached[1]

    def _update(self, batch: _Batch, group: dict, world_size: int) -> None:
        """One fused Adam call over segments whose total size fits the fp32 scratch buffer."""
        if batch.new_steps:
            torch._foreach_add_(batch.new_steps, 1)
        grads = [layer.compute_weight.grad.reshape(-1)[start:end] for layer, start, end in batch.sources]
        torch._foreach_copy_(batch.grads, grads)  # bf16 -> fp32, exact
        if world_size > 1:
            dist.all_reduce(batch.flat_grads)
            batch.flat_grads.div_(world_size)
        beta1, beta2 = group["betas"]
        torch._fused_adam_(batch.masters, batch.grads, batch.exp_avgs, batch.exp_avg_sqs, [], batch.steps,
                           lr=group["lr"], beta1=beta1, beta2=beta2, weight_decay=group["weight_decay"],
                           eps=group["eps"], amsgrad=False, maximize=group["maximize"])
        torch._foreach_copy_(batch.copies, batch.masters)  # fp32 -> bf16 while still in cache


def _same_on_every_rank(numel: int) -> None:
    """The gradient all-reduces pair up by position: every rank must update the same weights (DDP
    raises in that case too). One small all_reduce per step, before any gradient one."""
    counts = every_rank(numel)
    if len(set(counts)) > 1:
        per_rank = ", ".join(f"rank {rank}: {count}" for rank, count in enumerate(counts))
        raise RuntimeError(f"bf16 weight copies: ranks have gradients for different weights ({per_rank} "
                           f"elements); a Linear got no gradient on some rank")


class _Batch(NamedTuple):
    """Flat slices of master weights, their Adam state and bf16 copies, at most one scratch buffer
    in all; `sources` say where each slice's gradient is, `grads` where it is widened to."""

    masters: list[torch.Tensor]
    exp_avgs: list[torch.Tensor]
    exp_avg_sqs: list[torch.Tensor]
    copies: list[torch.Tensor]
    steps: list[torch.Tensor]  # one per slice (Adam's step of the slice's weight)
    new_steps: list[torch.Tensor]  # each weight's step once, counted when its first slice is updated
    sources: list[tuple[Linear, int, int]]
    grads: list[torch.Tensor]
    flat_grads: torch.Tensor


class _Slice(NamedTuple):
    master: torch.Tensor
    exp_avg: torch.Tensor
    exp_avg_sq: torch.Tensor
    copy: torch.Tensor
    step: torch.Tensor
    first: bool  # the weight's first slice: its step is counted here
    source: tuple[Linear, int, int]


def _plan_batches(updated: list[tuple[torch.Tensor, Linear]], state: dict, scratch: torch.Tensor) -> list[_Batch]:
    """Cut the weights into slices of at most len(scratch) elements and pack them into batches of
    at most that many: big weights go a chunk at a time, small ones many per kernel call."""
    limit = scratch.numel()
    groups: list[list[_Slice]] = [[]]
    filled = 0
    for master, layer in updated:
        flat = (master.view(-1), state[master]["exp_avg"].view(-1), state[master]["exp_avg_sq"].view(-1),
                layer.compute_weight.detach().view(-1))
        for start in range(0, flat[0].numel(), limit):
            end = min(start + limit, flat[0].numel())
            if filled + end - start > limit:
                groups.append([])
                filled = 0
            groups[-1].append(_Slice(*(t[start:end] for t in flat), step=state[master]["step"], first=start == 0,
                                     source=(layer, start, end)))
            filled += end - start
    batches = []
    for slices in groups:
        sizes = [s.master.numel() for s in slices]
        flat_grads = scratch[: sum(sizes)]
        batches.append(_Batch(
            masters=[s.master for s in slices], exp_avgs=[s.exp_avg for s in slices],
            exp_avg_sqs=[s.exp_avg_sq for s in slices], copies=[s.copy for s in slices],
            steps=[s.step for s in slices], new_steps=[s.step for s in slices if s.first],
            sources=[s.source for s in slices], grads=list(flat_grads.split(sizes)), flat_grads=flat_grads))
    return batches
