"""Revisited Oxford / Paris evaluation (Radenovic et al. 2018), as whiten_mtd's ``compute_map`` runs it."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch

SETTINGS = {
    "easy": (("easy",), ("junk", "hard")),
    "medium": (("easy", "hard"), ("junk",)),
    "hard": (("hard",), ("junk", "easy")),
}
"""Protocol setting -> (gnd keys whose union is relevant, gnd keys whose union is junk)."""


def _index_list(gnd: Mapping, keys: Sequence[str], n_db: int, query: int) -> np.ndarray:
    """Concatenation of ``gnd[key]`` for ``keys`` (a missing ``junk`` counts as empty), checked in range."""
    parts = []
    for key in keys:
        if key not in gnd and key != "junk":
            raise ValueError(f"gnd[{query}] has no '{key}' list")
        parts.append(np.asarray(gnd.get(key, []), dtype=np.int64).reshape(-1))
    idx = np.concatenate(parts)
    if idx.size and (idx.min() < 0 or idx.max() >= n_db):
        raise ValueError(f"gnd[{query}] indexes outside the database (size {n_db})")
    return idx


def query_ap_and_precision(rank_of: np.ndarray, ok: np.ndarray, junk: np.ndarray,
                           ks: Sequence[int]) -> tuple[float, np.ndarray]:
    """AP and precision@k of one query; ``rank_of[j]`` = 0-based position of database item j.

    Positions of relevant items are lowered by the number of junk items ranked strictly before them.
    AP is the trapezoid rule: for the j-th (0-based) relevant item at adjusted position r,
    ((j/r, or 1 if r = 0) + (j+1)/(r+1)) / 2 / |ok|, summed in ranking order; |ok| counts duplicate entries
    of ``ok`` (a duplicate caps AP below 1, as in the reference code). With 1-based positions p,
    precision@k = #{p <= k_q} / k_q where k_q = min(max p, k): the divisor shrinks to the worst relevant
    position when all relevant items sit above k.
    """
    pos = np.sort(rank_of[np.unique(ok)])
    junk_pos = np.sort(rank_of[np.unique(junk)])
    pos = pos - np.searchsorted(junk_pos, pos, side="left")
    j = np.arange(len(pos), dtype=np.float64)
    p0 = np.where(pos == 0, 1.0, j / np.maximum(pos, 1))
    p1 = (j + 1.0) / (pos + 1.0)
    ap = float(np.cumsum((p0 + p1) * (1.0 / len(ok)) / 2.0)[-1])
    pos1 = pos + 1
    prec = np.array([(pos1 <= min(pos1.max(), k)).sum() / min(pos1.max(), k) for k in ks], dtype=np.float64)
    return ap, prec


def revisited_map(scores, gnd: Sequence[Mapping], ks: Sequence[int] = (1, 5, 10)) -> dict[str, float]:
    """mAP and mP@k (percent) of the revisited Oxford/Paris protocol in its three settings.

    scores: n_query x n_db similarities (higher is better; torch or numpy). gnd: one dict per query with
    database index lists ``easy``, ``hard`` and ``junk``. Settings (relevant / junk, junk removed from the
    ranking): easy = easy / junk + hard, medium = easy + hard / junk, hard = hard / junk + easy.
    Each query's ranking is a stable descending sort of its scores (ties by database index; the reference
    ``torch.argsort(-sim)`` orders ties arbitrarily). A query without relevant items in a setting is skipped
    in that setting's means. Returns ``map_{s}`` and ``mp_at_{k}_{s}`` for s in easy, medium, hard.
    Raises ValueError if a setting has no query with relevant items (the reference divides by zero), if an
    index is outside the database, or on shape mismatch.
    """
    s = torch.as_tensor(scores).detach().cpu().numpy()
    if s.ndim != 2 or s.shape[0] != len(gnd):
        raise ValueError(f"scores must be n_query x n_db with n_query = len(gnd) = {len(gnd)}, got {s.shape}")
    ks = tuple(int(k) for k in ks)
    if any(k < 1 for k in ks):
        raise ValueError(f"ks must be positive, got {ks}")
    if not np.isfinite(s).all():
        raise ValueError("scores contain NaN or infinite values")
    n_db = s.shape[1]
    sums = {name: [0.0, np.zeros(len(ks)), 0] for name in SETTINGS}
    for i, g in enumerate(gnd):
        rank_of = np.empty(n_db, dtype=np.int64)
        rank_of[np.argsort(-s[i], kind="stable")] = np.arange(n_db)
        for name, (ok_keys, junk_keys) in SETTINGS.items():
            ok = _index_list(g, ok_keys, n_db, i)
            if ok.size == 0:
                continue
            ap, prec = query_ap_and_precision(rank_of, ok, _index_list(g, junk_keys, n_db, i), ks)
            acc = sums[name]
            acc[0] += ap
            acc[1] = acc[1] + prec
            acc[2] += 1
    out = {}
    for name, (ap_sum, prec_sum, n) in sums.items():
        if n == 0:
            raise ValueError(f"no query has relevant items in the '{name}' setting")
        out[f"map_{name}"] = ap_sum / n * 100.0
        out.update({f"mp_at_{k}_{name}": float(p) / n * 100.0 for k, p in zip(ks, prec_sum)})
    return out
