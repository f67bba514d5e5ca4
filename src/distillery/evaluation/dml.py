"""Deep-metric-learning evaluation (S2SD protocol: query = gallery = the test set): retrieval metrics with
hit@{1,2,4,8}, MAP@R and R-precision (pytorch-metric-learning's definitions), NMI of seeded faiss k-means, and
S2SD's own ``mAP_c`` for comparison with the paper. Definitions: ``docs/metrics.md``."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .clustering import nmi as nmi_score
from .retrieval import retrieval_metrics
from .search import BLOCK_ELEMENTS, as_embeddings, as_labels, encode_jointly, l2_normalize, positive_ranks

DML_KS = (1, 2, 4, 8)

DML_METRIC_DEFINITIONS = {
    "map_c_s2sd": "S2SD's mAP_c, percent: mean over all queries (singleton classes included, scoring 0) of "
                  "(1/n) sum_{i<=n} rel_i * precision@i over the first n results (query removed), n = size of the "
                  "query's class including the query; a perfect ranking scores (n-1)/n.",
}


def map_c_s2sd(embeddings, labels, *, block_elements: int = BLOCK_ELEMENTS) -> float:
    """S2SD's ``mAP_c`` (metrics/mAP_c.py) in percent, with the query removed by index (official: by position).

    For query q with R other items of its class (n = R + 1) and r_1 < ... < r_R their 0-based ranks among the
    other N - 1 items (cosine, ties by index): AP_q = (1/n) sum_{j: r_j < n} j / (r_j + 1). Every query counts,
    a singleton (R = 0) with AP 0. Equals PML's MAP@R times R/n plus the term of rank n.
    """
    x = l2_normalize(as_embeddings(embeddings, "embeddings"))
    codes = encode_jointly(as_labels(labels, "labels"))[0]
    if len(codes) != x.shape[0]:
        raise ValueError("labels must have one entry per embedding row")
    total = 0.0
    for _, ranks, n_rel in positive_ranks(x, x, codes, codes, exclude_self=True, block_elements=block_elements):
        j = np.arange(1, ranks.shape[1] + 1, dtype=np.float64)
        window = (j[None, :] <= n_rel[:, None]) & (ranks >= 0) & (ranks <= n_rel[:, None])
        prec = np.where(window, j / (np.maximum(ranks, 0) + 1.0), 0.0)
        total += float((prec.sum(1) / (n_rel + 1.0)).sum())
    return 100.0 * total / len(codes)


def dml_metrics(embeddings, labels, *, ks: Sequence[int] = DML_KS, seed: int = 0, nmi: bool = True,
                n_clusters: int | None = None, block_elements: int = BLOCK_ELEMENTS) -> dict[str, float]:
    """All DML metrics (percent) of one evaluation set used as query and gallery (each query's own item removed
    by index): :func:`retrieval_metrics` keys (``recall_at_{k}`` = hit@k, ``map_at_r``, ``r_precision``, ``map``,
    ``minp``, counts), ``map_c_s2sd`` and, if ``nmi``, ``nmi`` (faiss k-means seeded with ``seed``, k =
    ``n_clusters`` or the number of distinct labels; embeddings L2-normalised first)."""
    out = retrieval_metrics(embeddings, labels, embeddings, labels, exclude_self=True, ks=ks,
                            block_elements=block_elements)
    out["map_c_s2sd"] = map_c_s2sd(embeddings, labels, block_elements=block_elements)
    if nmi:
        out["nmi"] = nmi_score(embeddings, labels, seed, n_clusters=n_clusters)
    return out
