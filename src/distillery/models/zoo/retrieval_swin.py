"""Retrieval Swin-V2-S teacher option, as ``retrieval_swinv2_s``.

D3still uses timm ``swinv2_small_window8_256``; timm is not a dependency here, so this is torchvision's
``swin_v2_s`` (same depths 2/2/18/2, width 96, heads 3/6/12/24, window 8, 256x256 pre-training) with the same
outputs. It is a stand-in: timm checkpoints (D3still's released Swin teachers) do not load into it.
"""

from __future__ import annotations

import torch.nn as nn
from torch import Tensor
from torchvision import models as tvm
from torchvision.ops import StochasticDepth

from distillery.models.heads import RetrievalHead
from distillery.models.output import ModelOutput
from distillery.models.registry import register_model


class RetrievalSwinV2S(nn.Module):
    """Patch embedding and four stages of torchvision ``swin_v2_s``; final LayerNorm; mean over H, W -> pooled
    768; RetrievalHead -> (logits, embedding).

    ModelOutput: feats = the four stage outputs as B x C x H x W (96@/4, 192@/8, 384@/16, 768@/32, before the
    final norm, like timm's ``forward_intermediates``), pooled = mean of the normed last map, embedding,
    logits, preact_feats = []. Stochastic depth: linear up to ``drop_path_rate`` (timm's default 0.1;
    torchvision's builder would use 0.3).
    """

    def __init__(self, num_classes: int = 1000, pretrained: bool = False, embedding_dim: int = 512,
                 drop_path_rate: float = 0.1):
        super().__init__()
        weights = tvm.Swin_V2_S_Weights.IMAGENET1K_V1 if pretrained else None
        base = tvm.swin_v2_s(weights=weights)
        self.features, self.norm = base.features, base.norm
        depths = [m for m in self.features.modules() if isinstance(m, StochasticDepth)]
        for i, m in enumerate(depths):
            m.p = drop_path_rate * i / max(len(depths) - 1, 1)
        self.fc = RetrievalHead(768, num_classes, embedding_dim)

    def forward(self, x: Tensor) -> ModelOutput:
        feats = []
        for i, module in enumerate(self.features):
            x = module(x)
            if i % 2 == 1:  # stages sit at odd indices (0: patch embedding, even: patch merging)
                feats.append(x.permute(0, 3, 1, 2))
        pooled = self.norm(x).mean((1, 2))
        logits, embedding = self.fc(pooled)
        return ModelOutput(feats=feats, pooled=pooled, embedding=embedding, logits=logits)


@register_model("retrieval_swinv2_s")
def retrieval_swinv2_s(num_classes: int = 1000, pretrained: bool = False, embedding_dim: int = 512,
                       drop_path_rate: float = 0.1, last_stride: int | None = None) -> RetrievalSwinV2S:
    """``last_stride`` is accepted for a uniform retrieval interface and ignored (as the official)."""
    return RetrievalSwinV2S(num_classes, pretrained, embedding_dim, drop_path_rate)
