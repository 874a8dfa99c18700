"""Adam with a backbone group and one group per tower, each on its own learning-rate schedule,
plus the fused optimizer of the embedding tables (applied inside the backward pass by TorchRec).
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Iterable

import torch
from torch import nn

from components.common.errors import ConfigError
from components.ranker.layers import Linear
from components.train.config import EmbeddingOptimizerConfig, LearningRateConfig, OptimizerConfig
from components.train.precision import MasterWeightAdam

BACKBONE_GROUP = "backbone"


def learning_rate_at(config: LearningRateConfig, step: int) -> float:
    """The learning rate of update number `step` (0-based) under one schedule."""
    if config.constant is not None:
        return config.constant.learning_rate
    if config.linear_ramp_to_constant is not None:
        s = config.linear_ramp_to_constant
        return s.learning_rate * min(1.0, step / s.num_ramp_steps)
    if config.linear_ramp_to_cosine is not None:
        s = config.linear_ramp_to_cosine
        if step < s.num_ramp_steps:
            return s.learning_rate * step / s.num_ramp_steps
        span = max(s.final_num_steps - s.num_ramp_steps, 1)
        progress = min(1.0, (step - s.num_ramp_steps) / span)
        return s.final_learning_rate + 0.5 * (s.learning_rate - s.final_learning_rate) * (1 + math.cos(math.pi * progress))
    s = config.piecewise_constant
    assert s is not None  # the config validator guarantees exactly one schedule
    return s.learning_rate_values[bisect.bisect_right(s.learning_rate_boundaries, step)]


def group_schedules(config: OptimizerConfig, tasks: Iterable[str]) -> dict[str, LearningRateConfig]:
    """Group name -> schedule: "backbone" first, then one per task in schema order."""
    rates = config.multi_task_learning_rates
    schedules = {BACKBONE_GROUP: rates.backbone_learning_rate}
    for task in tasks:
        schedule = rates.tower_learning_rates.get(task) or rates.default_tower_learning_rate
        if schedule is None:
            raise ConfigError(f"optimizer.multi_task_learning_rates: no learning rate for tower {task}")
        schedules[task] = schedule
    return schedules


def parameter_groups(named_parameters: Iterable[tuple[str, nn.Parameter]], tasks: list[str]
                     ) -> dict[str, dict[str, nn.Parameter]]:
    """Split dense parameters by owner: a task's tower/backbone, or the shared "backbone" group."""
    groups: dict[str, dict[str, nn.Parameter]] = {BACKBONE_GROUP: {}} | {task: {} for task in tasks}
    for name, param in named_parameters:
        owner = next((t for t in tasks if name.startswith((f"towers.{t}.", f"task_backbones.{t}."))), BACKBONE_GROUP)
        groups[owner][name] = param
    return groups


def build_dense_optimizer(named_parameters: dict[str, nn.Parameter], tasks: list[str],
                          config: OptimizerConfig, bf16_weight_copies: list[Linear] | None = None) -> torch.optim.Adam:
    """Adam over the dense parameters, one param group per schedule (named by "name").

    With `bf16_weight_copies` (layers.Linear computing in bf16, see precision.py) their fp32
    weights are masters updated from the copies' gradients by MasterWeightAdam.
    """
    schedules = group_schedules(config, tasks)
    groups = parameter_groups(named_parameters.items(), tasks)
    param_groups = [
        {"params": list(groups[name].values()), "name": name, "lr": learning_rate_at(schedule, 0)}
        for name, schedule in schedules.items()
        if groups[name]
    ]
    adam = config.adam
    if bf16_weight_copies:
        return MasterWeightAdam(param_groups, bf16_weight_copies, betas=(adam.beta_1, adam.beta_2), eps=adam.epsilon)
    fused = config.fused_adam and all(p.dtype == torch.float32 for p in named_parameters.values())
    return torch.optim.Adam(param_groups, betas=(adam.beta_1, adam.beta_2), eps=adam.epsilon,
                            fused=fused or None)


def set_learning_rates(optimizer: torch.optim.Optimizer, schedules: dict[str, LearningRateConfig],
                       step: int) -> dict[str, float]:
    """Set every group's lr for update `step`; returns name -> lr for logging."""
    rates = {}
    for group in optimizer.param_groups:
        name = group.get("name")
        if name in schedules:
            group["lr"] = learning_rate_at(schedules[name], step)
            rates[name] = group["lr"]
    return rates


def embedding_optimizer(config: EmbeddingOptimizerConfig, device: torch.device) -> tuple[type, dict]:
    """(optimizer class, kwargs) for torchrec's apply_optimizer_in_backward."""
    from torchrec.optim import RowWiseAdagrad

    if config.algorithm == "adam" and device.type == "cpu":
        raise ConfigError("optimizer.embedding.algorithm: adam is not supported by fbgemm on CPU; "
                          "use rowwise_adagrad, adagrad or sgd")
    classes = {"rowwise_adagrad": RowWiseAdagrad, "adagrad": torch.optim.Adagrad,
               "sgd": torch.optim.SGD, "adam": torch.optim.Adam}
    kwargs: dict = {"lr": config.learning_rate}
    if config.algorithm in ("rowwise_adagrad", "adagrad", "adam"):
        kwargs["eps"] = config.epsilon
    return classes[config.algorithm], kwargs
