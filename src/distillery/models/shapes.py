"""Shape discovery: connectors are sized from a dummy forward, never from hard-coded channel tables."""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn as nn


def probe_shapes(model: nn.Module, input_size: int | Sequence[int], batch_size: int = 1) -> dict:
    """Shapes of every ``ModelOutput`` field for an input of ``input_size``.

    input_size: S (-> 3 x S x S), (H, W) (-> 3 x H x W) or (C, H, W). The dummy input is zeros on the model's
    device and dtype; the forward runs under ``no_grad`` in eval mode, so BN running statistics are untouched
    (unlike mdistiller's ``get_feat_shapes``, which probes in train mode), and every submodule's training flag
    is restored afterwards.

    Returns {"feats": [torch.Size], "preact_feats": [torch.Size], "pooled": torch.Size,
    "embedding": torch.Size, "logits": torch.Size | None, "extras": {name: torch.Size}}; every shape keeps the
    leading batch dimension (``batch_size``).
    """
    size = (input_size,) * 2 if isinstance(input_size, int) else tuple(input_size)
    if len(size) == 2:
        size = (3, *size)
    if len(size) != 3:
        raise ValueError(f"input_size must be S, (H, W) or (C, H, W), got {input_size!r}")
    reference = next(model.parameters(), None)
    device = reference.device if reference is not None else torch.device("cpu")
    dtype = reference.dtype if reference is not None else torch.float32
    flags = {m: m.training for m in model.modules()}
    try:
        model.eval()
        with torch.no_grad():
            out = model(torch.zeros(batch_size, *size, device=device, dtype=dtype))
    finally:
        for m, flag in flags.items():
            m.training = flag
    return {
        "feats": [f.shape for f in out.feats],
        "preact_feats": [f.shape for f in out.preact_feats],
        "pooled": out.pooled.shape,
        "embedding": out.embedding.shape,
        "logits": None if out.logits is None else out.logits.shape,
        "extras": {k: v.shape for k, v in out.extras.items()},
    }
