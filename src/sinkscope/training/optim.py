"""The optimiser of ``sinkscope train`` and its learning-rate schedule: AdamW (decay on matrices
only), linear warm-up, then a cosine down to ``min_lr_ratio`` of the peak."""

from __future__ import annotations

import math

import torch

from .config import TrainConfig


def learning_rate(cfg: TrainConfig, step: int) -> float:
    """The learning rate of optimiser step ``step`` (0-based).

    >>> cfg = TrainConfig(lr=1.0, warmup=2, steps=12, min_lr_ratio=0.1)
    >>> [round(learning_rate(cfg, s), 3) for s in (0, 1, 2, 7, 12)]
    [0.5, 1.0, 1.0, 0.55, 0.1]
    """
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    t = (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup)
    return cfg.lr * (
        cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * min(1.0, t)))
    )


def make_optimizer(model: torch.nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    """AdamW with ``cfg.weight_decay`` on the weight matrices and embeddings and none on the
    biases, LayerNorm gains and sink logits (parameters under two dimensions)."""
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2]
    rest = [p for n, p in model.named_parameters() if p.ndim < 2]
    return torch.optim.AdamW(
        [
            {"params": decay, "weight_decay": cfg.weight_decay},
            {"params": rest, "weight_decay": 0.0},
        ],
        lr=cfg.lr,
        betas=(0.9, 0.95),
    )
