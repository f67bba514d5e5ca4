"""Top-k classification accuracy, as mdistiller's ``engine/utils.py: accuracy``."""

from __future__ import annotations

from collections.abc import Sequence

import torch


def classification_metrics(logits, labels, ks: Sequence[int] = (1, 5)) -> dict[str, float]:
    """``top{k}`` = percent of samples whose label is among the k largest logits.

    logits: N x C (torch or numpy), labels: N ints in [0, C). The k largest come from ``torch.topk`` (as in
    mdistiller), so exact ties among logits are broken the way ``torch.topk`` breaks them.
    mdistiller computes a float32 percentage per batch and averages the batches weighted by size; here the
    count of correct samples over the whole set is turned into a percentage once, in float64 (the two agree
    to float32 rounding). Raises ValueError when k exceeds C (``topk`` fails there), on shape mismatch, or on
    labels outside [0, C) (mdistiller's validation loss fails on those).
    """
    x = torch.as_tensor(logits).detach()
    y = torch.as_tensor(labels).detach().to(x.device).long()
    if x.ndim != 2 or y.ndim != 1 or x.shape[0] != y.shape[0] or x.shape[0] == 0:
        raise ValueError(f"need logits N x C and labels N with N > 0, got {tuple(x.shape)} and {tuple(y.shape)}")
    ks = tuple(int(k) for k in ks)
    if not ks or min(ks) < 1 or max(ks) > x.shape[1]:
        raise ValueError(f"every k must be in [1, {x.shape[1]}] (number of classes), got {ks}")
    if y.min() < 0 or y.max() >= x.shape[1]:
        raise ValueError(f"labels must lie in [0, {x.shape[1]})")
    top = x.topk(max(ks), dim=1, largest=True, sorted=True).indices
    hit = top == y[:, None]
    return {f"top{k}": 100.0 * int(hit[:, :k].sum()) / x.shape[0] for k in ks}
