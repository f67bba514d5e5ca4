"""Module wrapper of the functional multi-similarity loss (S2SD's CUB/Cars criterion)."""

from __future__ import annotations

import torch

from distillery.losses.dml._sampling import as_label_tensor
from distillery.losses.math.s2sd import multisimilarity_loss


class MultiSimilarityLoss(torch.nn.Module):
    """``loss(emb, labels)`` = :func:`distillery.losses.math.s2sd.multisimilarity_loss` with the
    stored weights (defaults α 2, β 40, margin 0.1, λ 0.5). Mining is built in; no parameters."""

    def __init__(self, pos_weight: float = 2.0, neg_weight: float = 40.0, margin: float = 0.1, thresh: float = 0.5):
        super().__init__()
        self.pos_weight, self.neg_weight = pos_weight, neg_weight
        self.margin, self.thresh = margin, thresh

    def forward(self, emb: torch.Tensor, labels) -> torch.Tensor:
        labels = as_label_tensor(labels).to(emb.device)
        return multisimilarity_loss(emb, labels, self.pos_weight, self.neg_weight, self.margin, self.thresh)

    def extra_repr(self) -> str:
        return f"pos_weight={self.pos_weight}, neg_weight={self.neg_weight}, margin={self.margin}, thresh={self.thresh}"
