"""Retrieval head of D3still's backbones (d3still.md section 4, official ``ClassBlock``)."""

from __future__ import annotations

import torch.nn as nn
from torch import Tensor


class RetrievalHead(nn.Module):
    """pooled (B x D_in) -> BN1d -> ReLU -> Linear(D_in, D, no bias) -> BN1d = embedding (B x D);
    embedding -> Linear(D, num_classes, no bias) = logits.

    Attribute names (``add_block``, ``classifier``) match the official ``ClassBlock`` so checkpoints load.
    Init: Linear of add_block Kaiming normal (a=0, fan_out); BN weight 1, bias 0; classifier N(0, 0.001).
    """

    def __init__(self, in_dim: int, num_classes: int, embedding_dim: int = 512):
        super().__init__()
        self.add_block = nn.Sequential(
            nn.BatchNorm1d(in_dim),
            nn.ReLU(inplace=True),
            nn.Linear(in_dim, embedding_dim, bias=False),
            nn.BatchNorm1d(embedding_dim),
        )
        for m in self.add_block.modules():  # initialised before the classifier exists (official RNG order)
            if isinstance(m, nn.Linear):
                nn.init.kaiming_normal_(m.weight, a=0, mode="fan_out")
            elif isinstance(m, nn.BatchNorm1d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        self.classifier = nn.Linear(embedding_dim, num_classes, bias=False)
        nn.init.normal_(self.classifier.weight, std=0.001)

    def forward(self, pooled: Tensor) -> tuple[Tensor, Tensor]:
        """Returns (logits B x num_classes, embedding B x D)."""
        embedding = self.add_block(pooled)
        return self.classifier(embedding), embedding


class L2LinearHead(nn.Module):
    """whiten_mtd's student head (whiten_mtd.md section 4.1): pooled (B x D_in) -> L2-normalise ->
    Linear(D_in, D) with bias (PyTorch default init) = embedding (B x D, not normalised); no classifier.

    Official quirk not reproduced: the official fc is Linear(embed_dim, embed_dim), so only D_in = D = 512
    works there; here the input width is the backbone's.
    """

    def __init__(self, in_dim: int, embedding_dim: int = 512):
        super().__init__()
        self.fc = nn.Linear(in_dim, embedding_dim)

    def forward(self, pooled: Tensor) -> tuple[None, Tensor]:
        """Returns (None, embedding B x D): the same (logits, embedding) pair as RetrievalHead, without logits."""
        return None, self.fc(nn.functional.normalize(pooled, p=2, dim=-1))
