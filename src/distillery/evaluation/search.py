"""Exact, blockwise cosine search: input conversion, k-NN and the ranks of the relevant gallery items.

Nothing here ever holds a full query x gallery matrix: queries are processed in blocks of
``block_elements // n_gallery`` rows against the whole gallery.

Distances follow D3still's evaluator: both sides L2-normalised in float32 (``F.normalize``, eps 1e-12), then
``d = 1 - q @ g.T`` in float32. Ranking is ascending distance with ties broken by gallery index (a stable
sort). The official evaluators sort with numpy's default quicksort (D3still) or ``torch.argsort`` (revisited
Oxford/Paris), whose order among exactly equal distances is arbitrary; on tie-free data all orders agree.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch
import torch.nn.functional as F

BLOCK_ELEMENTS = 1 << 24
"""Default number of query x gallery entries held at once (about 350 MB of temporaries in ``positive_ranks``)."""

_REMOVED = float("inf")  # distance given to gallery items removed from a query's ranking
_PAD = 4.0  # threshold padding: above every cosine distance (<= 2 + rounding), below _REMOVED


def as_embeddings(x, name: str = "embeddings") -> torch.Tensor:
    """N x D float32 tensor (torch or numpy input; stays on a tensor's device), checked finite and 2-D."""
    t = torch.as_tensor(x).detach()
    if t.ndim != 2:
        raise ValueError(f"{name} must be 2-D (N x D), got shape {tuple(t.shape)}")
    t = t.to(torch.float32)
    if not torch.isfinite(t).all():
        raise ValueError(f"{name} contains NaN or infinite values")
    return t.contiguous()


def as_labels(x, name: str = "labels") -> np.ndarray:
    """1-D numpy array of labels (any comparable dtype) from a tensor, array or list."""
    a = x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
    if a.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {a.shape}")
    return a


def encode_jointly(*arrays: np.ndarray) -> list[np.ndarray]:
    """Map labels of several arrays to shared int64 codes 0..C-1 (equal labels, equal codes)."""
    sizes = [len(a) for a in arrays]
    _, codes = np.unique(np.concatenate(arrays), return_inverse=True)
    return [c.astype(np.int64) for c in np.split(codes.reshape(-1), np.cumsum(sizes)[:-1])]


def l2_normalize(x: torch.Tensor) -> torch.Tensor:
    """Row-wise L2 normalisation as ``F.normalize(x, p=2, dim=1)`` (eps 1e-12: a zero row stays zero)."""
    return F.normalize(x, p=2, dim=1)


def query_blocks(n_query: int, n_gallery: int, block_elements: int = BLOCK_ELEMENTS) -> Iterator[slice]:
    """Consecutive query slices of at most ``max(1, block_elements // n_gallery)`` rows."""
    rows = max(1, block_elements // max(1, n_gallery))
    for start in range(0, n_query, rows):
        yield slice(start, min(start + rows, n_query))


def cosine_distance(query: torch.Tensor, gallery: torch.Tensor) -> torch.Tensor:
    """B x G float32 ``1 - query @ gallery.T`` of already normalised rows (D3still's distance)."""
    return (query @ gallery.T).neg_().add_(1.0)  # in place: same rounding as 1 - x, one buffer


def knn(query, gallery, k: int, *, exclude_self: bool = False,
        block_elements: int = BLOCK_ELEMENTS) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact cosine k-nearest neighbours, blockwise.

    Returns ``(indices, distances)``, both N_q x k, best first; distances are ``1 - cos``. With
    ``exclude_self`` query i and gallery item i are the same sample and item i is removed from row i by index.
    Order within the returned k is (distance, gallery index); which of several items tied exactly at the k-th
    distance are returned follows ``torch.topk`` (arbitrary).
    """
    q = l2_normalize(as_embeddings(query, "query"))
    g = l2_normalize(as_embeddings(gallery, "gallery"))
    n_avail = g.shape[0] - int(exclude_self)
    if exclude_self and q.shape[0] != g.shape[0]:
        raise ValueError("exclude_self needs as many queries as gallery items")
    if not 1 <= k <= n_avail:
        raise ValueError(f"k must be in [1, {n_avail}], got {k}")
    out_i, out_d = [], []
    for blk in query_blocks(q.shape[0], g.shape[0], block_elements):
        d = cosine_distance(q[blk], g)
        if exclude_self:
            rows = torch.arange(d.shape[0], device=d.device)
            d[rows, rows + blk.start] = _REMOVED
        dist, idx = torch.topk(d, k, dim=1, largest=False, sorted=True)
        # re-sort the k candidates by (distance, index): idx sorted first, then a stable sort by distance
        idx, perm = idx.sort(dim=1)
        dist = dist.gather(1, perm)
        dist, perm = dist.sort(dim=1, stable=True)
        out_i.append(idx.gather(1, perm))
        out_d.append(dist)
    return torch.cat(out_i), torch.cat(out_d)


def _count_closer(d: torch.Tensor, thr: torch.Tensor, first: torch.Tensor,
                  chunk: int = 1 << 22) -> tuple[torch.Tensor, torch.Tensor]:
    """Counts against per-row sorted thresholds ``thr`` (B x R, valid where ``first``, a prefix of each row).

    Returns ``closer`` B x R with closer[i, k] = #{j: d[i, j] < thr[i, k]} (exact for valid k) and
    ``n_match`` B = #{(j, k): d[i, j] == thr[i, k]}. Only entries with d <= the row's last valid threshold are
    visited: each gets its bucket #{k: thr[i, k] <= d} (then d < thr[i, k] iff bucket <= k), in chunks of
    ``chunk`` candidate x threshold comparisons.
    """
    b, r = thr.shape
    last = torch.where(first, thr, -_REMOVED).max(dim=1).values
    rows, cols = torch.nonzero(d <= last[:, None], as_tuple=True)
    vals = d[rows, cols]
    hist = torch.zeros(b * (r + 1), dtype=torch.long, device=d.device)
    n_match = torch.zeros(b, dtype=torch.long, device=d.device)
    step = max(1, chunk // r)
    for s in range(0, vals.numel(), step):
        rr, v = rows[s:s + step], vals[s:s + step, None]
        t = thr[rr]
        bucket = torch.searchsorted(t, v, right=True).view(-1)
        hist += torch.bincount(rr * (r + 1) + bucket, minlength=b * (r + 1))
        equal = bucket - torch.searchsorted(t, v, right=False).view(-1)
        n_match += torch.bincount(rr, weights=equal, minlength=b).long()
    return hist.view(b, r + 1).cumsum(1)[:, :r], n_match


def positive_ranks(q: torch.Tensor, g: torch.Tensor, q_codes: np.ndarray, g_codes: np.ndarray, *,
                   exclude_self: bool, q_cams: np.ndarray | None = None, g_cams: np.ndarray | None = None,
                   block_elements: int = BLOCK_ELEMENTS) -> Iterator[tuple[slice, np.ndarray, np.ndarray]]:
    """Per query block, the 0-based ranks of the relevant gallery items in the query's ranking.

    ``q``, ``g``: normalised N_q x D / N_g x D embeddings; ``*_codes``: int64 label codes shared by both sides
    (``encode_jointly``); ``*_cams``: int64 camera codes or None.
    Relevant = same label. Removed from the ranking (before ranks are counted): with ``exclude_self`` the
    gallery item with the query's own index; with cameras every relevant item seen by the query's camera.
    Ranking: ascending ``1 - cos``, ties broken by gallery index, exactly as a stable sort of the row.

    Yields ``(block, ranks, n_rel)``: ``ranks`` is B x R_max int64, row i holding in its first ``n_rel[i]``
    entries the increasing ranks of the kept relevant items (rest -1).

    Method (no row sort): the kept relevant distances of a row, sorted, are thresholds T_1 <= ... <= T_R; the
    rank of the k-th is #{items closer than T_k} + #{earlier relevant items tied with it}. Only items with
    distance <= T_R are compared with the thresholds (``_count_closer``). A row where some other item has
    exactly a relevant item's distance falls back to a stable sort of that row.
    """
    n_g = g.shape[0]
    dev = q.device
    order = torch.as_tensor(np.argsort(g_codes, kind="stable"), device=dev)
    n_codes = int(max(q_codes.max(initial=-1), g_codes.max(initial=-1))) + 1
    counts = np.bincount(g_codes, minlength=n_codes)
    starts = np.cumsum(counts) - counts
    g_cams_t = None if g_cams is None else torch.as_tensor(g_cams, device=dev)
    for blk in query_blocks(q.shape[0], n_g, block_elements):
        b = blk.stop - blk.start
        cnt = torch.as_tensor(counts[q_codes[blk]], device=dev)
        r_max = int(cnt.max()) if b else 0
        if r_max == 0:
            yield blk, np.full((b, 0), -1, dtype=np.int64), np.zeros(b, dtype=np.int64)
            continue
        col = torch.arange(r_max, device=dev)
        valid = col[None, :] < cnt[:, None]
        slot = torch.as_tensor(starts[q_codes[blk]], device=dev)[:, None] + col[None, :]
        pos = order[slot.clamp(max=n_g - 1)]  # B x R_max gallery indices of the relevant items
        removed = torch.zeros_like(valid)
        if exclude_self:
            removed |= pos == torch.arange(blk.start, blk.stop, device=dev)[:, None]
        if g_cams_t is not None:
            removed |= g_cams_t[pos] == torch.as_tensor(q_cams[blk], device=dev)[:, None]
        removed &= valid
        kept = valid & ~removed
        n_rel = kept.sum(1)

        d = cosine_distance(q[blk], g)
        rows = torch.arange(b, device=dev)[:, None].expand(b, r_max)
        d[rows[removed], pos[removed]] = _REMOVED  # removed items are always relevant ones
        thr = torch.where(kept, d.gather(1, pos), torch.full_like(d[:, :1], _PAD)).sort(dim=1).values

        first = col[None, :] < n_rel[:, None]
        closer, n_match = _count_closer(d, thr, first)
        ranks = col + (closer - col).cummax(dim=1).values  # equal relevant distances take consecutive ranks

        # exact ties between a relevant and another item: threshold matches beyond the relevant items' own
        own = torch.searchsorted(thr, thr, right=True) - torch.searchsorted(thr, thr, right=False)
        own = torch.where(first, own, 0).sum(1)
        for i in torch.nonzero(n_match > own).flatten().tolist():
            rank_of = torch.empty(n_g, dtype=torch.long, device=dev)
            rank_of[torch.sort(d[i], stable=True).indices] = torch.arange(n_g, device=dev)
            exact = rank_of[pos[i][kept[i]]].sort().values
            ranks[i, : exact.numel()] = exact
        ranks = torch.where(first, ranks, -1)
        yield blk, ranks.cpu().numpy(), n_rel.cpu().numpy()
