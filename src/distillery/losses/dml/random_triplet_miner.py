"""Uniform random triplets as in the S2SD code base's ``random`` miner."""

from __future__ import annotations

import torch

from distillery.losses.dml._sampling import as_label_tensor


def all_triplets(labels) -> torch.Tensor:
    """Every valid (a, p, n): y_a = y_p, a != p, y_n != y_a, in lexicographic order.

    LongTensor (T, 3) with T = Σ_c n_c (n_c − 1)(B − n_c).
    """
    labels = as_label_tensor(labels)
    same = labels.unsqueeze(0) == labels.unsqueeze(1)
    ap = same & ~torch.eye(len(labels), dtype=torch.bool)
    return (ap.unsqueeze(2) & ~same.unsqueeze(1)).nonzero()


class RandomTripletMiner:
    """Exactly B triplets drawn uniformly without replacement from :func:`all_triplets`.

    Fewer than B valid triplets raises ``ValueError`` (the official ``random.sample`` fails).
    Returns LongTensor (B, 3) on ``emb.device``; draws use ``generator`` (CPU; None = global RNG).
    """

    def __init__(self, generator: torch.Generator | None = None):
        self.generator = generator

    def __call__(self, emb: torch.Tensor, labels) -> torch.Tensor:
        triplets = all_triplets(labels)
        n = emb.shape[0]
        if len(triplets) < n:
            raise ValueError(f"only {len(triplets)} valid triplets in a batch of {n}")
        pick = torch.randperm(len(triplets), generator=self.generator)[:n]
        return triplets[pick].to(emb.device)
