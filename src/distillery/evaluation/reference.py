"""Slow full-matrix oracle for ``retrieval_metrics`` (tests and the scale benchmark only).

Builds the whole N_q x N_g distance matrix and stable-sorts every row, then walks each ranking as D3still's
Python evaluator does. Memory O(N_q * N_g): use only on small inputs.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .search import as_embeddings, as_labels, cosine_distance, l2_normalize


def naive_retrieval_metrics(query_emb, query_labels, gallery_emb, gallery_labels, *, exclude_self: bool,
                            ks: Sequence[int] = (1, 5, 10), query_cams=None, gallery_cams=None) -> dict[str, float]:
    """Same keys and conventions as ``retrieval_metrics``, computed from the full sorted distance matrix."""
    q = l2_normalize(as_embeddings(query_emb))
    g = l2_normalize(as_embeddings(gallery_emb))
    dist = cosine_distance(q, g).cpu().numpy()
    ql, gl = as_labels(query_labels), as_labels(gallery_labels)
    qc = None if query_cams is None else as_labels(query_cams)
    gc = None if gallery_cams is None else as_labels(gallery_cams)
    order = np.argsort(dist, axis=1, kind="stable")
    per_query: dict[str, list[float]] = {}
    n_without = 0
    for i in range(len(ql)):
        idx = order[i]
        keep = np.ones(len(idx), dtype=bool)
        if exclude_self:
            keep &= idx != i
        if qc is not None:
            keep &= ~((gl[idx] == ql[i]) & (gc[idx] == qc[i]))
        rel = (gl[idx][keep] == ql[i]).astype(np.float64)
        n_rel = int(rel.sum())
        if n_rel == 0:
            n_without += 1
            continue
        hits = np.cumsum(rel)
        prec = hits / np.arange(1, len(rel) + 1)
        last = int(np.flatnonzero(rel)[-1])
        values = {
            "map": float((prec * rel).sum() / n_rel),
            "map_at_r": float((prec * rel)[:n_rel].sum() / n_rel),
            "r_precision": float(rel[:n_rel].sum() / n_rel),
            "minp": float(hits[last] / (last + 1)),
        }
        values.update({f"recall_at_{k}": float(rel[:k].any()) for k in ks})
        for key, val in values.items():
            per_query.setdefault(key, []).append(val)
    out = {key: 100.0 * float(np.mean(vals)) for key, vals in per_query.items()}
    out.update(n_queries=len(ql), n_queries_without_match=n_without)
    return out
