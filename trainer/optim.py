"""The optimiser and learning-rate schedule of the paper and its framework.

AdamW (beta 0.9/0.999, weight decay 0.01 except on biases and LayerNorm gamma/beta), lr 2e-4 with a
linear warm-up over the first 10% of the steps, then a linear decay to zero; gradients clipped to
`grad_clip` (global norm). The fused CUDA kernel is used when every parameter is on CUDA.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

NO_DECAY_SUFFIXES = (".bias", ".gamma", ".beta")  # biases and LayerNorm parameters


@dataclass(frozen=True)
class OptimConfig:
    lr: float = 2e-4
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    weight_decay: float = 0.01
    warmup_fraction: float = 0.1  # of the total steps
    grad_clip: float = 1.0  # global gradient norm; 0 = off


def parameter_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if p.requires_grad:
            (no_decay if name.endswith(NO_DECAY_SUFFIXES) else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def build_optimizer(model: torch.nn.Module, config: OptimConfig) -> torch.optim.AdamW:
    fused = all(p.is_cuda for p in model.parameters())
    return torch.optim.AdamW(
        parameter_groups(model, config.weight_decay),
        lr=config.lr,
        betas=config.betas,
        eps=config.eps,
        fused=fused or None,
    )


def lr_factor(step: int, total_steps: int, warmup_fraction: float) -> float:
    """Multiplier of the peak lr for the optimiser step `step` (0-based): linear up, then linear down to 0."""
    warmup = max(1, round(total_steps * warmup_fraction))
    if step < warmup:
        return (step + 1) / warmup
    return max(0.0, (total_steps - step) / max(1, total_steps - warmup))


def build_schedule(
    optimizer: torch.optim.Optimizer, config: OptimConfig, total_steps: int
) -> torch.optim.lr_scheduler.LambdaLR:
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: lr_factor(step, total_steps, config.warmup_fraction)
    )


def reschedule(optimizer: torch.optim.Optimizer, schedule: torch.optim.lr_scheduler.LambdaLR) -> None:
    """After a restored schedule's length changed: the next step's lr from the new schedule at the restored step
    (the restored optimiser still holds the old schedule's)."""
    lrs = [base * factor(schedule.last_epoch) for base, factor in zip(schedule.base_lrs, schedule.lr_lambdas)]
    for group, lr in zip(optimizer.param_groups, lrs):
        group["lr"] = lr
    schedule._last_lr = lrs  # what get_last_lr() reports
