"""Triplet loss over mined triplets as in the S2SD code base's ``triplet`` criterion.

Not the contract ``triplet_loss`` of API.md (D3still's batch-hard / batch-soft loss).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from distillery.losses.dml.distance_weighted_miner import DistanceWeightedMiner


def triplet_loss_sampled(emb: torch.Tensor, triplets: torch.Tensor, margin: float = 0.2) -> torch.Tensor:
    """mean_t relu(‖x_a − x_p‖² − ‖x_a − x_n‖² + margin) over ``triplets`` T x 3.

    Squared distances, no epsilon, no normalisation inside. No triplets raises ``ValueError``
    (the official code fails stacking an empty list).
    """
    triplets = torch.as_tensor(triplets, dtype=torch.long, device=emb.device).reshape(-1, 3)
    if len(triplets) == 0:
        raise ValueError("triplet_loss_sampled needs at least one triplet")
    anchor, pos, neg = emb[triplets[:, 0]], emb[triplets[:, 1]], emb[triplets[:, 2]]
    return F.relu((anchor - pos).pow(2).sum(dim=1) - (anchor - neg).pow(2).sum(dim=1) + margin).mean()


class TripletLoss(torch.nn.Module):
    """``loss(emb, labels)``: mines with ``miner`` (default :class:`DistanceWeightedMiner`, the
    S2SD default ``--batch_mining distance``) and applies :func:`triplet_loss_sampled`."""

    def __init__(self, margin: float = 0.2, miner=None):
        super().__init__()
        self.margin = margin
        self.miner = DistanceWeightedMiner() if miner is None else miner

    def forward(self, emb: torch.Tensor, labels) -> torch.Tensor:
        return triplet_loss_sampled(emb, self.miner(emb, labels), self.margin)
