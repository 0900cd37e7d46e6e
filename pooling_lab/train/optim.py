"""Optimiser with a separate parameter group for pooling parameters, and lr schedules."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING

import torch
from torch import nn

if TYPE_CHECKING:
    from pooling_lab.experiment import OptimConfig
    from pooling_lab.models.classifier import Classifier

BASE_GROUP, POOL_GROUP = "base", "pool"


def pooling_parameters(model: Classifier) -> list[nn.Parameter]:
    """The parameters of the pooling group: what each pool declares in ``group_parameters``
    (p, r, alpha ...; a pool's ordinary network weights such as attention projections stay
    in the base group)."""
    seen: dict[int, nn.Parameter] = {}
    for _, pool in model.pools():
        for parameter in pool.group_parameters():
            if parameter.requires_grad:
                seen[id(parameter)] = parameter
    return list(seen.values())


def parameter_groups(model: Classifier, config: OptimConfig) -> list[dict]:
    """Two groups: everything else, and the pooling parameters with their own lr and decay."""
    pool_params = pooling_parameters(model)
    pool_ids = {id(p) for p in pool_params}
    base = [p for p in model.parameters() if p.requires_grad and id(p) not in pool_ids]
    groups = [{"name": BASE_GROUP, "params": base, "lr": config.lr, "weight_decay": config.weight_decay}]
    if pool_params:
        groups.append({
            "name": POOL_GROUP,
            "params": pool_params,
            "lr": config.lr * config.pool_params.lr_mult,
            "weight_decay": config.pool_params.weight_decay,
        })
    return groups


def build_optimizer(model: Classifier, config: OptimConfig) -> torch.optim.Optimizer:
    groups = parameter_groups(model, config)
    if config.name == "sgd":
        return torch.optim.SGD(groups, lr=config.lr, momentum=config.momentum, nesterov=config.nesterov)
    if config.name == "adam":
        return torch.optim.Adam(groups, lr=config.lr, betas=config.betas)
    return torch.optim.AdamW(groups, lr=config.lr, betas=config.betas)


def lr_factor(config: OptimConfig, steps_per_epoch: int, total_steps: int) -> Callable[[int], float]:
    """Multiplier of the base lr after ``step`` updates: linear warmup, then the schedule."""
    warmup = round(config.warmup_epochs * steps_per_epoch)

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        if config.schedule == "constant":
            return 1.0
        if config.schedule == "step":
            return config.gamma ** (step // (config.step_epochs * steps_per_epoch))
        progress = (step - warmup) / max(1, total_steps - warmup)
        cosine = 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0)))
        return config.min_lr_ratio + (1.0 - config.min_lr_ratio) * cosine

    return factor


def build_scheduler(
    optimizer: torch.optim.Optimizer, config: OptimConfig, steps_per_epoch: int, total_steps: int
) -> torch.optim.lr_scheduler.LambdaLR:
    """Per-step schedule; the pooling group follows it too but is held at 0 while frozen."""
    factor = lr_factor(config, steps_per_epoch, total_steps)
    frozen_steps = config.pool_params.freeze_epochs * steps_per_epoch

    def pool_factor(step: int) -> float:
        return 0.0 if step < frozen_steps else factor(step)

    lambdas = [pool_factor if group["name"] == POOL_GROUP else factor for group in optimizer.param_groups]
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambdas)


def group_lr(optimizer: torch.optim.Optimizer, name: str) -> float:
    for group in optimizer.param_groups:
        if group["name"] == name:
            return float(group["lr"])
    return float("nan")
