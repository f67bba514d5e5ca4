"""Distance-weighted negative sampling (Wu et al. 2017) as in the S2SD code base's ``distance`` miner."""

from __future__ import annotations

import torch

from distillery.losses.dml._sampling import as_label_tensor, sample_per_row, sample_positives
from distillery.losses.dml.euclidean_distance import EuclideanDistance


def distance_weighted_neg_probs(
    emb: torch.Tensor, labels, lower_cutoff: float = 0.5, distance=None
) -> torch.Tensor:
    """B x B row-stochastic negative-sampling probabilities (no gradient).

    With d = distance(emb.detach()) clamped to >= ``lower_cutoff`` (so the self-distance 0 becomes
    the cutoff) and n = embedding dim:
    log q_ij = (2 − n) log d_ij − ((n − 3)/2) log(1 − d_ij²/4) (inverse unit-sphere distance density);
    log q_ij is set to 0 for every same-label j (self included) *before* the stabiliser, so the row
    max includes those zeros; q_ij = exp(log q_ij − max_j log q_ij), then 0 for same-label j; rows
    are normalised to sum 1.

    Quirks (official): no upper cutoff is applied (the official line is commented out); d >= 2
    (antipodal points, rounding) gives NaN rows, and a row whose q all underflow gives 0/0 = NaN;
    the official sampler then fails and :class:`DistanceWeightedMiner` raises ``ValueError``.
    """
    labels = as_label_tensor(labels).to(emb.device)
    distance = EuclideanDistance() if distance is None else distance
    d = distance(emb.detach()).clamp(min=lower_cutoff)
    dim = float(emb.shape[1])
    log_q = (2.0 - dim) * torch.log(d) - ((dim - 3.0) / 2) * torch.log(1.0 - 0.25 * d.pow(2))
    same = labels.unsqueeze(0) == labels.unsqueeze(1)
    log_q = log_q.masked_fill(same, 0.0)
    q = torch.exp(log_q - log_q.max(dim=1, keepdim=True)[0]).masked_fill(same, 0.0)
    return q / q.sum(dim=1, keepdim=True)


class DistanceWeightedMiner:
    """One triplet per anchor: negative ~ Categorical(:func:`distance_weighted_neg_probs` row),
    positive uniform over the anchor's other same-label samples (the anchor itself if it is alone
    in its class, as in the official miner).

    ``miner(emb, labels) -> LongTensor (B, 3)`` of (anchor, positive, negative), anchors 0..B-1,
    on ``emb.device``. Draws use ``generator`` (a CPU ``torch.Generator``; None = global RNG).
    The official ``upper_cutoff`` (1.4) is never applied there, so it is not an argument here.
    """

    def __init__(self, lower_cutoff: float = 0.5, distance=None, generator: torch.Generator | None = None):
        self.lower_cutoff = lower_cutoff
        self.distance = EuclideanDistance() if distance is None else distance
        self.generator = generator

    def __call__(self, emb: torch.Tensor, labels) -> torch.Tensor:
        labels = as_label_tensor(labels)
        probs = distance_weighted_neg_probs(emb, labels, self.lower_cutoff, self.distance)
        negatives = sample_per_row(probs, self.generator, "distance-weighted negative")
        positives = sample_positives(labels, self.generator, self_if_alone=True)
        anchors = torch.arange(len(labels))
        return torch.stack([anchors, positives, negatives], dim=1).to(emb.device)
