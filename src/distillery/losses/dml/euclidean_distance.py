"""Pairwise Euclidean distance, as every batch miner of the S2SD code base computes it."""

from __future__ import annotations

import torch


def pairwise_l2(emb: torch.Tensor, squared: bool = False) -> torch.Tensor:
    """B x B Euclidean distances of the rows of ``emb`` (B x D).

    D²_ij = clamp(‖x_i‖² + ‖x_j‖² − 2 x_i·x_j, min=0) with the squared norms taken from the diagonal
    of the Gram matrix x xᵀ (so the diagonal is ~0 up to rounding); D = sqrt(D²) unless ``squared``.
    """
    gram = emb.mm(emb.t())
    sq_norm = gram.diag().unsqueeze(1).expand_as(gram)
    dist2 = (sq_norm + sq_norm.t() - 2 * gram).clamp(min=0)
    return dist2 if squared else dist2.sqrt()


class EuclideanDistance:
    """Callable distance object for miners: ``EuclideanDistance(squared)(emb) -> B x B``."""

    def __init__(self, squared: bool = False):
        self.squared = squared

    def __call__(self, emb: torch.Tensor) -> torch.Tensor:
        return pairwise_l2(emb, squared=self.squared)

    def __repr__(self) -> str:
        return f"EuclideanDistance(squared={self.squared})"
