"""Evaluation metrics, all in percent: retrieval (D3still / pytorch-metric-learning), revisited Oxford/Paris,
near-duplicate video retrieval (whiten_mtd SVD), classification top-k (mdistiller) and clustering NMI (S2SD)."""

from __future__ import annotations

import re

from .classification import classification_metrics
from .clustering import nmi
from .retrieval import retrieval_metrics
from .revisited import revisited_map
from .video import chamfer_similarity, video_retrieval_metrics, video_similarity

_TIES = "ties broken by gallery index"

_FIXED = {
    "map": "Mean over queries with a relevant item of average precision over the whole cosine ranking of the "
           f"gallery (D3still's mAP; {_TIES}), percent.",
    "map_at_r": "Mean over queries of MAP@R, average precision truncated to the first R results with R = number of "
                "relevant gallery items (pytorch-metric-learning), percent.",
    "r_precision": "Mean over queries of the fraction of relevant items among the first R results, R = number of "
                   "relevant gallery items (pytorch-metric-learning), percent.",
    "minp": "Mean over queries of (number of relevant items) / (rank of the last relevant item), D3still's "
            "mean inverse negative penalty, percent.",
    "n_queries": "Number of queries evaluated, including those without a relevant gallery item.",
    "n_queries_without_match": "Number of queries with no relevant gallery item after removals, left out of "
                               "every retrieval average.",
    "map_topinf": "Mean over video queries of AP over the whole ranked list (its ground-truth candidates plus "
                  "every distractor), normalised by the relevant items in the list, 0 without one (whiten_mtd "
                  "SVD evaluator), percent.",
    "n_queries_without_positive": "Number of video queries with no relevant item in their list, scored 0 in "
                                  "map_topinf (whiten_mtd counts them).",
    "nmi": "Normalised mutual information (arithmetic mean of entropies) between class labels and seeded faiss "
           "k-means clusters of the L2-normalised embeddings, k = number of classes, percent.",
}
_PATTERNS = (
    (r"recall_at_(\d+)", "Percent of queries with a relevant gallery item among the first {0} cosine results "
                         f"(hit@{{0}}, CMC rank-{{0}}, the DML papers' Recall@{{0}}; {_TIES})."),
    (r"top(\d+)", "Percent of samples whose label is among the {0} largest logits (mdistiller top-{0} accuracy)."),
    (r"map_top(\d+)", "Mean over video queries of AP over the first {0} entries of the ranked list, normalised by the "
                      "relevant items among them, 0 without one (whiten_mtd SVD top-{0} mAP), percent."),
    (r"map_(easy|medium|hard)", "Revisited Oxford/Paris mean average precision (trapezoid rule, junk removed) "
                                "in the {0} setting, percent."),
    (r"mp_at_(\d+)_(easy|medium|hard)", "Revisited Oxford/Paris mean precision at {0} (divisor min({0}, position "
                                        "of the last relevant item)) in the {1} setting, percent."),
)


def metric_definition(key: str) -> str:
    """One-sentence definition of a metric key, including ``recall_at_{k}``, ``top{k}``, ``mp_at_{k}_{s}``."""
    if key in _FIXED:
        return _FIXED[key]
    for pattern, text in _PATTERNS:
        match = re.fullmatch(pattern, key)
        if match:
            return text.format(*match.groups())
    raise KeyError(f"unknown metric key {key!r}")


_SETTINGS = ("easy", "medium", "hard")
METRIC_DEFINITIONS: dict[str, str] = {key: metric_definition(key) for key in [
    *_FIXED,
    *(f"recall_at_{k}" for k in (1, 2, 4, 5, 8, 10, 16, 20, 32, 50, 100)),
    "top1", "top5",
    *(f"map_{s}" for s in _SETTINGS),
    *(f"mp_at_{k}_{s}" for s in _SETTINGS for k in (1, 5, 10)),
    "map_top100",
]}
"""Metric key -> one-sentence definition, for writing next to the numbers in metrics JSON files."""

__all__ = ["METRIC_DEFINITIONS", "chamfer_similarity", "classification_metrics", "metric_definition", "nmi",
           "retrieval_metrics", "revisited_map", "video_retrieval_metrics", "video_similarity"]
