"""Composable deep-metric-learning pieces of the S2SD recipes (spec: s2sd_dml.md section 2.3).

Distances, miners and losses are separate objects: a loss receives its miner, a miner its distance.
Miners return LongTensor (T, 3) of (anchor, positive, negative) and draw with an explicit
``torch.Generator``, so their deterministic parts (probabilities, masks) match the official code
exactly while the draws themselves are reproducible from a seed.
"""

from distillery.losses.dml.criteria import EMBEDDING_CRITERIA, build_criterion
from distillery.losses.dml.distance_weighted_miner import DistanceWeightedMiner, distance_weighted_neg_probs
from distillery.losses.dml.euclidean_distance import EuclideanDistance, pairwise_l2
from distillery.losses.dml.margin_loss import MarginLoss, margin_loss
from distillery.losses.dml.multisimilarity_loss import MultiSimilarityLoss
from distillery.losses.dml.random_triplet_miner import RandomTripletMiner, all_triplets
from distillery.losses.dml.semihard_miner import SemihardMiner, semihard_neg_mask
from distillery.losses.dml.triplet_loss import TripletLoss, triplet_loss_sampled

__all__ = [
    "EMBEDDING_CRITERIA",
    "DistanceWeightedMiner",
    "EuclideanDistance",
    "MarginLoss",
    "MultiSimilarityLoss",
    "RandomTripletMiner",
    "SemihardMiner",
    "TripletLoss",
    "all_triplets",
    "build_criterion",
    "distance_weighted_neg_probs",
    "margin_loss",
    "pairwise_l2",
    "semihard_neg_mask",
    "triplet_loss_sampled",
]
