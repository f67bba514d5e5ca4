"""Retrieval head shared by all retrieval backbones (D3still ``ClassBlock``)."""

from __future__ import annotations

import torch.nn as nn
from torch import Tensor


class ClassBlock(nn.Module):
    """pooled (B x C) -> BN1d -> ReLU -> Linear(C, D, no bias) -> BN1d(D) = embedding; Linear(D, classes) = logits.

    Init as D3still: Linear layers Kaiming-normal (fan_out), BN weight 1 / bias 0, classifier N(0, 0.001).
    ``num_classes = 0`` builds no classifier (logits None).
    """

    def __init__(self, in_dim: int, embedding_dim: int = 512, num_classes: int = 0):
        super().__init__()
        self.add_block = nn.Sequential(nn.BatchNorm1d(in_dim), nn.ReLU(inplace=True),
                                       nn.Linear(in_dim, embedding_dim, bias=False), nn.BatchNorm1d(embedding_dim))
        self.classifier = nn.Linear(embedding_dim, num_classes, bias=False) if num_classes else None
        for m in self.add_block.modules():
            if isinstance(m, nn.Linear):
                nn.init.kaiming_normal_(m.weight, a=0, mode="fan_out")
            elif isinstance(m, nn.BatchNorm1d):
                nn.init.constant_(m.weight, 1.0)
                nn.init.constant_(m.bias, 0.0)
        if self.classifier is not None:
            nn.init.normal_(self.classifier.weight, std=0.001)

    def forward(self, pooled: Tensor) -> tuple[Tensor, Tensor | None]:
        embedding = self.add_block(pooled)
        logits = self.classifier(embedding) if self.classifier is not None else None
        return embedding, logits
