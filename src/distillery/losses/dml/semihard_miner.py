"""Semi-hard negative mining as in the S2SD code base's ``semihard`` miner."""

from __future__ import annotations

import torch

from distillery.losses.dml._sampling import as_label_tensor, sample_per_row, sample_positives
from distillery.losses.dml.euclidean_distance import EuclideanDistance


def semihard_neg_mask(dist: torch.Tensor, labels, pos_idx: torch.Tensor, margin: float) -> torch.Tensor:
    """B x B mask of semi-hard negatives: y_j != y_i and D_ip < D_ij < D_ip + margin (strict).

    ``dist`` B x B distances, ``pos_idx`` (B,) the positive chosen for each anchor.
    """
    labels = as_label_tensor(labels).to(dist.device)
    d_ap = dist.gather(1, pos_idx.to(dist.device).view(-1, 1))
    neg = labels.unsqueeze(0) != labels.unsqueeze(1)
    return neg & (dist > d_ap) & (dist < margin + d_ap)


class SemihardMiner:
    """One triplet per anchor: positive uniform over {j != i : y_j = y_i}; negative uniform over
    the semi-hard band of :func:`semihard_neg_mask`, or over all negatives if the band is empty.

    Distances are non-squared Euclidean on ``emb.detach()`` (official quirk: the band uses
    non-squared distances while the triplet loss uses squared ones). ``margin`` is the band width
    (official: the loss's margin, 0.2). An anchor without another same-label sample or without any
    negative raises ``ValueError`` (the official sampler fails). Returns LongTensor (B, 3) on
    ``emb.device``; draws use ``generator`` (CPU; None = global RNG).
    """

    def __init__(self, margin: float = 0.2, distance=None, generator: torch.Generator | None = None):
        self.margin = margin
        self.distance = EuclideanDistance() if distance is None else distance
        self.generator = generator

    def __call__(self, emb: torch.Tensor, labels) -> torch.Tensor:
        labels = as_label_tensor(labels)
        dist = self.distance(emb.detach()).cpu()
        positives = sample_positives(labels, self.generator, self_if_alone=False)
        band = semihard_neg_mask(dist, labels, positives, self.margin)
        neg = labels.unsqueeze(0) != labels.unsqueeze(1)
        cand = torch.where(band.any(dim=1, keepdim=True), band, neg)
        negatives = sample_per_row(cand.float(), self.generator, "negative")
        anchors = torch.arange(len(labels))
        return torch.stack([anchors, positives, negatives], dim=1).to(emb.device)
