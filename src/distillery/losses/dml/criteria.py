"""Named embedding criteria (loss + miner + distance) as the S2SD recipes select them by name.

Every criterion is an ``nn.Module`` called as ``criterion(emb, labels) -> 0-d tensor`` on an embedding the
caller has L2-normalised. Defaults are the S2SD code base's (parameters.py): multisimilarity α 2, β 40,
margin 0.1, λ 0.5; margin loss margin 0.2 with a learnable per-class β (init 1.2) and distance-weighted mining
(lower cutoff 0.5); triplet margin 0.2 with semi-hard (band = the triplet margin), distance-weighted or random
mining. Miners draw from ``generator`` (a CPU ``torch.Generator``, None = the global RNG).
"""

from __future__ import annotations

import torch

from distillery.losses.dml.distance_weighted_miner import DistanceWeightedMiner
from distillery.losses.dml.margin_loss import MarginLoss
from distillery.losses.dml.multisimilarity_loss import MultiSimilarityLoss
from distillery.losses.dml.random_triplet_miner import RandomTripletMiner
from distillery.losses.dml.semihard_miner import SemihardMiner
from distillery.losses.dml.triplet_loss import TripletLoss

EMBEDDING_CRITERIA = ("multisimilarity", "margin", "triplet_semihard", "triplet_distance", "triplet_random")
"""Names accepted by :func:`build_criterion` (``training.task_loss`` and S2SD's ``source`` / ``target``)."""

TRIPLET_MARGIN = 0.2


def check_criterion(name: str, what: str = "criterion") -> str:
    """``name`` if it is one of EMBEDDING_CRITERIA, else ValueError listing them."""
    if name not in EMBEDDING_CRITERIA:
        raise ValueError(f"unknown {what} {name!r} (valid: {', '.join(EMBEDDING_CRITERIA)})")
    return name


def build_criterion(name: str, *, n_classes: int | None = None,
                    generator: torch.Generator | None = None) -> torch.nn.Module:
    """A fresh criterion ``name`` (see EMBEDDING_CRITERIA); ``n_classes`` sizes the margin loss's β vector."""
    check_criterion(name)
    if name == "multisimilarity":
        return MultiSimilarityLoss()
    if name == "margin":
        if n_classes is None:
            raise ValueError("the margin criterion learns one beta per class: it needs the number of classes")
        return MarginLoss(n_classes=n_classes, beta=1.2, margin=0.2, learn_beta=True,
                          miner=DistanceWeightedMiner(lower_cutoff=0.5, generator=generator))
    miner = {"triplet_semihard": lambda: SemihardMiner(margin=TRIPLET_MARGIN, generator=generator),
             "triplet_distance": lambda: DistanceWeightedMiner(lower_cutoff=0.5, generator=generator),
             "triplet_random": lambda: RandomTripletMiner(generator=generator)}[name]()
    return TripletLoss(margin=TRIPLET_MARGIN, miner=miner)
