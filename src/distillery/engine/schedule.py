"""Learning-rate schedules."""

from __future__ import annotations

import math


def warmup_cosine_lr(epoch: int, base_lr: float, epochs: int, warmup_epochs: int, cosine_start: int,
                     min_lr: float = 1e-7) -> float:
    """D3still's per-epoch WarmupCosineAnnealingLR (epoch 0-based).

    Linear warm-up factor 0.1 + 0.9 * e / warmup for e < warmup; constant until ``cosine_start``; then
    min_lr + (lr - min_lr) * (1 + cos(pi * (e - start) / (epochs - start))) / 2.
    """
    if epoch < warmup_epochs:
        return base_lr * (0.1 + 0.9 * epoch / warmup_epochs)
    if epoch < cosine_start:
        return base_lr
    span = max(epochs - cosine_start, 1)
    return min_lr + (base_lr - min_lr) * (1 + math.cos(math.pi * (epoch - cosine_start) / span)) / 2
