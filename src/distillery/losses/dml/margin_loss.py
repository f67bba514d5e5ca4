"""Margin loss with per-class learnable β (Wu et al. 2017) as in the S2SD code base's ``margin``."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from distillery.losses.dml._sampling import as_label_tensor
from distillery.losses.dml.distance_weighted_miner import DistanceWeightedMiner


def margin_loss(
    emb: torch.Tensor, labels, triplets: torch.Tensor, beta: float | torch.Tensor, margin: float = 0.2
) -> torch.Tensor:
    """Margin loss over given triplets.

    ``emb`` B x D (not normalised inside), ``triplets`` T x 3 (anchor, positive, negative indices),
    ``beta`` a float or a per-class tensor indexed by the anchor's label.
    d_ap = sqrt(‖x_a − x_p‖² + 1e-8), d_an likewise (epsilon inside the sqrt);
    pos = relu(d_ap − β + margin), neg = relu(β − d_an + margin);
    loss = Σ(pos + neg) / pair_count with pair_count = #{t : pos_t > 0 or neg_t > 0}, or Σ(pos + neg)
    (= 0) when pair_count is 0; ``0 * emb.sum()`` when there are no triplets (official: 0).

    Quirk: the official pair count adds two bool tensors, which torch evaluates as a logical OR,
    so a triplet with both terms active counts once. The ν·β regulariser is not supported (any
    ν != 0 crashes in the official code).
    """
    triplets = torch.as_tensor(triplets, dtype=torch.long, device=emb.device).reshape(-1, 3)
    if len(triplets) == 0:
        return emb.sum() * 0.0
    anchor, pos, neg = emb[triplets[:, 0]], emb[triplets[:, 1]], emb[triplets[:, 2]]
    d_ap = ((anchor - pos).pow(2).sum(dim=1) + 1e-8).pow(0.5)
    d_an = ((anchor - neg).pow(2).sum(dim=1) + 1e-8).pow(0.5)
    if isinstance(beta, torch.Tensor) and beta.dim() > 0:
        labels = as_label_tensor(labels).to(beta.device)
        beta = beta[labels[triplets[:, 0].to(beta.device)]].to(d_ap.device, torch.float)
    pos_loss = F.relu(d_ap - beta + margin)
    neg_loss = F.relu(beta - d_an + margin)
    pair_count = ((pos_loss > 0.0) | (neg_loss > 0.0)).sum().float()
    total = (pos_loss + neg_loss).sum()
    return total if pair_count == 0 else total / pair_count


class MarginLoss(torch.nn.Module):
    """Margin loss module: ``loss(emb, labels)`` mines triplets with ``miner`` (default
    :class:`DistanceWeightedMiner`) and applies :func:`margin_loss`.

    ``learn_beta=True`` (official default) holds β as a Parameter of length ``n_classes``
    initialised to ``beta`` (labels must lie in 0..n_classes-1); otherwise β is the constant float.
    Official optimisation detail (not enforced here): β has its own lr (5e-4), but inside S2SD it
    gets the model lr (1e-5) and no weight decay.
    """

    def __init__(self, n_classes: int | None = None, beta: float = 1.2, margin: float = 0.2,
                 learn_beta: bool = True, miner=None):
        super().__init__()
        if learn_beta:
            if n_classes is None:
                raise ValueError("a learnable beta needs n_classes")
            self.beta = torch.nn.Parameter(torch.ones(n_classes) * beta)
        else:
            self.beta = float(beta)
        self.margin = margin
        self.miner = DistanceWeightedMiner() if miner is None else miner

    def forward(self, emb: torch.Tensor, labels) -> torch.Tensor:
        return margin_loss(emb, labels, self.miner(emb, labels), self.beta, self.margin)
