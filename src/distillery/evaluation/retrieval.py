"""Retrieval metrics over the whole ranked gallery (D3still's evaluator) plus MAP@R / R-precision (PML)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .search import BLOCK_ELEMENTS, as_embeddings, as_labels, encode_jointly, l2_normalize, positive_ranks


def metrics_from_ranks(ranks: np.ndarray, n_rel: np.ndarray, ks: Sequence[int]) -> dict[str, np.ndarray]:
    """Per-query metrics (fractions, float64) from the 0-based ranks of the relevant items.

    ``ranks``: B x R_max, row i holding its ``n_rel[i] >= 1`` increasing ranks first (rest ignored).
    With r_1 < ... < r_R the ranks and R = n_rel:
    AP = (1/R) sum_j j/(r_j+1); INP = R/(r_R+1); hit@k = [r_1 < k];
    MAP@R = (1/R) sum_{j: r_j < R} j/(r_j+1); R-precision = #{j: r_j < R}/R.
    """
    j = np.arange(1, ranks.shape[1] + 1, dtype=np.float64)
    first = j[None, :] <= n_rel[:, None]
    prec = np.where(first, j / (np.maximum(ranks, 0) + 1.0), 0.0)  # precision at each relevant item
    in_r = first & (ranks < n_rel[:, None])
    out = {
        "ap": prec.sum(1) / n_rel,
        "inp": n_rel / (ranks[np.arange(len(n_rel)), n_rel - 1] + 1.0),
        "map_at_r": np.where(in_r, prec, 0.0).sum(1) / n_rel,
        "r_precision": in_r.sum(1) / n_rel,
    }
    for k in ks:
        out[f"hit_at_{k}"] = (ranks[:, 0] < k).astype(np.float64)
    return out


def retrieval_metrics(query_emb, query_labels, gallery_emb, gallery_labels, *, exclude_self: bool,
                      ks: Sequence[int] = (1, 5, 10), query_cams=None, gallery_cams=None,
                      block_elements: int = BLOCK_ELEMENTS) -> dict[str, float]:
    """Retrieval metrics of cosine ranking, all in percent (0-100).

    query_emb: N_q x D, gallery_emb: N_g x D (torch or numpy; cast to float32 and L2-normalised here);
    labels: length N_q / N_g; cams: optional camera ids (both or neither).
    Each query ranks the gallery by ascending ``1 - cos``, ties broken by gallery index (stable). Before
    ranking, these gallery items are removed from a query's list: with ``exclude_self`` (query and gallery
    are the same N samples, e.g. D3still's student query vs teacher gallery features of one set) the item
    with the query's own index; with cameras every item with the query's label **and** camera (D3still's
    same-pid-same-camid rule; MSMT17). Relevant = same label among the remaining items; R = their number.

    Keys: ``map`` (mean AP over the whole ranking: (1/R) sum_j j/rank_j, D3still's mAP); ``recall_at_{k}``
    (hit@k: a relevant item among the first k, D3still's CMC / the DML "Recall@K"); ``map_at_r`` and
    ``r_precision`` (pytorch-metric-learning's MAP@R and R-precision with R as above, which equals its
    "class count minus the query" for ``exclude_self``); ``minp`` (mean R / rank of the last relevant item,
    D3still's mINP); ``n_queries`` (all queries) and ``n_queries_without_match`` (queries with R = 0, left out
    of every average, as D3still skips them and PML drops "lone" queries).

    Differences from the official evaluators, all below 1e-6 relative on tie-free data:
    D3still's Cython path accumulates AP in float32 and averages its CMC in float32 (here float64); the
    official numpy quicksort orders exactly tied distances arbitrarily (here by gallery index); D3still's
    CMC stops at max_rank 50 and breaks when fewer items remain (here any k); block matmuls may round the last
    bit of a distance differently from one full matmul, which only matters for near-exact ties.
    Raises ValueError on bad shapes, non-finite embeddings, or when no query has a relevant item (D3still
    asserts there).
    """
    q = l2_normalize(as_embeddings(query_emb, "query_emb"))
    g = l2_normalize(as_embeddings(gallery_emb, "gallery_emb")).to(q.device)
    ql, gl = as_labels(query_labels, "query_labels"), as_labels(gallery_labels, "gallery_labels")
    if q.shape[1] != g.shape[1]:
        raise ValueError(f"embedding sizes differ: query {q.shape[1]}, gallery {g.shape[1]}")
    if len(ql) != q.shape[0] or len(gl) != g.shape[0]:
        raise ValueError("labels must have one entry per embedding row")
    if exclude_self and (len(ql) != len(gl) or not np.array_equal(ql, gl)):
        raise ValueError("exclude_self=True needs query and gallery to be the same samples (same labels)")
    if (query_cams is None) != (gallery_cams is None):
        raise ValueError("give both query_cams and gallery_cams, or neither")
    ks = tuple(int(k) for k in ks)
    if any(k < 1 for k in ks):
        raise ValueError(f"ks must be positive, got {ks}")
    q_codes, g_codes = encode_jointly(ql, gl)
    q_cams = g_cams = None
    if query_cams is not None:
        qc, gc = as_labels(query_cams, "query_cams"), as_labels(gallery_cams, "gallery_cams")
        if len(qc) != len(ql) or len(gc) != len(gl):
            raise ValueError("cams must have one entry per embedding row")
        q_cams, g_cams = encode_jointly(qc, gc)

    per_query: dict[str, list[np.ndarray]] = {}
    n_without = 0
    for _, ranks, n_rel in positive_ranks(q, g, q_codes, g_codes, exclude_self=exclude_self, q_cams=q_cams,
                                          g_cams=g_cams, block_elements=block_elements):
        ok = n_rel > 0
        n_without += int((~ok).sum())
        if ok.any():
            for key, val in metrics_from_ranks(ranks[ok], n_rel[ok], ks).items():
                per_query.setdefault(key, []).append(val)
    if not per_query:
        raise ValueError("no query has a relevant gallery item; retrieval metrics are undefined")
    mean = {key: 100.0 * float(np.mean(np.concatenate(vals))) for key, vals in per_query.items()}
    out = {"map": mean["ap"]}
    out.update({f"recall_at_{k}": mean[f"hit_at_{k}"] for k in ks})
    out.update(map_at_r=mean["map_at_r"], r_precision=mean["r_precision"], minp=mean["inp"],
               n_queries=len(ql), n_queries_without_match=n_without)
    return out
