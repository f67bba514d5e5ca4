"""Discover a network's output shapes by a dummy forward (connectors are sized from this, never hard-coded)."""

from __future__ import annotations

import torch
import torch.nn as nn


@torch.no_grad()
def probe_shapes(model: nn.Module, input_size, channels: int = 3) -> dict:
    """Shapes of every ``ModelOutput`` field for a 2-image batch of ``input_size`` (int or (H, W)).

    Runs in eval mode (so BatchNorm statistics are untouched) and restores the previous mode.
    Returns e.g. ``{"feats": [(2, 64, 7, 7), ...], "pooled": (2, 64), "embedding": (2, 64), "logits": (2, 5)}``.
    """
    h, w = (input_size, input_size) if isinstance(input_size, int) else tuple(input_size)
    was_training = model.training
    model.eval()
    try:
        param = next(model.parameters(), None)
        device = param.device if param is not None else torch.device("cpu")
        out = model(torch.zeros(2, channels, h, w, device=device))
    finally:
        model.train(was_training)
    shapes = {"feats": [tuple(f.shape) for f in out.feats], "preact_feats": [tuple(f.shape) for f in out.preact_feats],
              "pooled": tuple(out.pooled.shape), "embedding": tuple(out.embedding.shape),
              "logits": tuple(out.logits.shape) if out.logits is not None else None}
    shapes.update({f"extras.{k}": tuple(v.shape) for k, v in out.extras.items()})
    return shapes
