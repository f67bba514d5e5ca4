"""Near-duplicate video retrieval as whiten_mtd's SVD evaluator computes it (svd_eval.py,
datasets/svd/eval.py ``DistEvaluator``, metric.py ``APScorer``).

A set of videos is given by its per-frame features, either flat (``N_frames x D``, each video's frames
consecutive, with ``lengths``: frames per video) or padded (``V x F x D`` with ``lengths``, slots past a
video's length ignored). Any float dtype; blocks are cast to float32 as they are used, so a large float32
array (or memmap) is never copied whole.

Similarities (query x gallery, float32):
- ``chamfer`` (the paper's ``cf``): frames L2-normalised (``F.normalize``, eps 1e-12); for each query frame
  the max cosine over the gallery video's frames, averaged over the query frames. Not symmetric.
- ``mean`` / ``max`` (``fme`` / ``fmx``): the video vector is the mean / elementwise max of the **raw**
  frame features, L2-normalised after pooling (the official order); similarity = cosine.
Everything is blockwise: at most ``block_elements`` frame-pair similarities (chamfer) or gathered gallery
feature values are held at once, never a full frame x frame matrix.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from distillery.data.transforms import IMAGENET_MEAN, IMAGENET_STD, center_crop_view, to_float

SIMILARITIES = ("chamfer", "mean", "max")
BLOCK_ELEMENTS = 1 << 23
"""Default number of frame-pair similarities (or gathered feature values) per block, about 32 MB each."""


class _Videos:
    """Per-frame features of V videos (flat or padded) and their lengths; serves normalised padded blocks."""

    def __init__(self, feats, lengths, name: str):
        self.feats = torch.as_tensor(feats).detach()
        lengths = lengths.detach().cpu().numpy() if isinstance(lengths, torch.Tensor) else np.asarray(lengths)
        if lengths.ndim != 1 or (lengths.size and not np.issubdtype(lengths.dtype, np.integer)):
            raise ValueError(f"{name}_lengths must be a 1-D integer array, got shape {lengths.shape}, "
                             f"dtype {lengths.dtype}")
        self.lengths = lengths.astype(np.int64)
        if self.lengths.size and self.lengths.min() < 1:
            raise ValueError(f"{name}: every video needs at least one frame (the official loader cannot stack "
                             f"an empty video); video {int(np.argmin(self.lengths))} has {self.lengths.min()}")
        if not self.feats.is_floating_point():
            raise ValueError(f"{name}_feats must be floating point, got {self.feats.dtype}")
        self.padded = self.feats.ndim == 3
        if self.feats.ndim == 2:
            if self.lengths.sum() != self.feats.shape[0]:
                raise ValueError(f"{name}: lengths sum to {self.lengths.sum()} frames but {name}_feats has "
                                 f"{self.feats.shape[0]} rows")
        elif self.padded:
            if self.feats.shape[0] != len(self.lengths) or self.lengths.max(initial=0) > self.feats.shape[1]:
                raise ValueError(f"{name}: padded features {tuple(self.feats.shape)} do not hold "
                                 f"{len(self.lengths)} videos of up to {self.lengths.max(initial=0)} frames")
        else:
            raise ValueError(f"{name}_feats must be N_frames x D or V x F x D, got shape {tuple(self.feats.shape)}")
        self.offsets = np.concatenate([[0], np.cumsum(self.lengths)])
        self.dim = self.feats.shape[-1]
        self.name = name

    def __len__(self) -> int:
        return len(self.lengths)

    def block(self, videos: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """(n x F x D float32 frames, n x F bool valid mask) of ``videos``, F = their longest length; padding 0."""
        lengths = torch.as_tensor(self.lengths[videos])
        width = int(lengths.max())
        valid = torch.arange(width)[None, :] < lengths[:, None]
        if self.padded:
            x = self.feats[torch.as_tensor(videos)][:, :width].to(torch.float32).masked_fill(~valid[..., None], 0.0)
        else:
            if np.all(np.diff(videos) == 1):  # a run of consecutive videos: one slice, no index array
                rows = self.feats[int(self.offsets[videos[0]]):int(self.offsets[videos[-1] + 1])]
            else:  # frame k of video v is row offsets[v] + k
                n = self.lengths[videos]
                within = np.arange(int(n.sum())) - np.repeat(np.cumsum(n) - n, n)
                rows = self.feats[torch.as_tensor(np.repeat(self.offsets[videos], n) + within)]
            x = torch.zeros(len(videos), width, self.dim, dtype=torch.float32)
            x[valid] = rows.to(torch.float32)
        if not torch.isfinite(x).all():
            raise ValueError(f"{self.name}_feats contains NaN or infinite values")
        return x, valid

    def pooled(self, videos: np.ndarray, mode: str) -> torch.Tensor:
        """n x D: the mean / elementwise max of each video's raw frames, then L2-normalised (fme / fmx)."""
        x, valid = self.block(videos)
        n = valid.sum(1)
        pool = [x[i, :n[i]].mean(0) if mode == "mean" else x[i, :n[i]].amax(0) for i in range(len(videos))]
        return F.normalize(torch.stack(pool), p=2, dim=-1)


def _chamfer_block(q: torch.Tensor, q_valid: torch.Tensor, g: torch.Tensor, g_valid: torch.Tensor) -> torch.Tensor:
    """Q x C chamfer similarity of normalised padded frames ``q`` (Q x Fq x D) and ``g`` (C x Fg x D)."""
    (nq, fq, d), (nc, fg, _) = q.shape, g.shape
    sims = (q.reshape(nq * fq, d) @ g.reshape(nc * fg, d).T).view(nq, fq, nc, fg)
    sims.masked_fill_(~g_valid.view(1, 1, nc, fg), float("-inf"))
    best = sims.amax(dim=-1).masked_fill_(~q_valid.view(nq, fq, 1), 0.0)  # Q x Fq x C
    return best.transpose(1, 2).contiguous().sum(-1) / q_valid.sum(1, keepdim=True)


def _score_blocks(query: _Videos, gallery: _Videos, videos: np.ndarray, similarity: str,
                  block_elements: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Yield ``(gallery video indices, Q x n float32 similarities)`` over ``videos`` in blocks."""
    if similarity not in SIMILARITIES:
        raise ValueError(f"unknown video similarity {similarity!r} (valid: {', '.join(SIMILARITIES)})")
    if query.dim != gallery.dim:
        raise ValueError(f"query frames are {query.dim}-d but gallery frames are {gallery.dim}-d")
    if len(query) == 0 or len(videos) == 0:
        return
    all_q = np.arange(len(query))
    if similarity == "chamfer":
        q, q_valid = query.block(all_q)
        q = F.normalize(q, p=2, dim=-1)
        fq, fg = q.shape[1], int(gallery.lengths.max(initial=1))
        pairs = max(1, block_elements // (fq * fg))
        q_rows = min(len(query), max(1, math.isqrt(pairs)))
        step = max(1, pairs // q_rows)
    else:
        q = query.pooled(all_q, similarity)
        step = max(1, min(block_elements // (int(gallery.lengths.max(initial=1)) * gallery.dim),
                          block_elements // max(1, len(query))))
    for start in range(0, len(videos), step):
        idx = videos[start:start + step]
        if similarity == "chamfer":
            g, g_valid = gallery.block(idx)
            g = F.normalize(g, p=2, dim=-1)
            scores = torch.cat([_chamfer_block(q[s:s + q_rows], q_valid[s:s + q_rows], g, g_valid)
                                for s in range(0, len(query), q_rows)])
        else:
            scores = q @ gallery.pooled(idx, similarity).T
        yield idx, scores.numpy()


def video_similarity(query_feats, query_lengths, gallery_feats, gallery_lengths, *, similarity: str = "chamfer",
                     block_elements: int = BLOCK_ELEMENTS) -> np.ndarray:
    """Q x G float32 video similarities (``chamfer``, ``mean`` or ``max``; see the module docstring).

    The result itself is Q x G: for a large gallery use ``video_retrieval_metrics``, which streams it.
    """
    query, gallery = _Videos(query_feats, query_lengths, "query"), _Videos(gallery_feats, gallery_lengths, "gallery")
    out = np.empty((len(query), len(gallery)), dtype=np.float32)
    for idx, scores in _score_blocks(query, gallery, np.arange(len(gallery)), similarity, block_elements):
        out[:, idx] = scores
    return out


def chamfer_similarity(query_feats, query_lengths, gallery_feats, gallery_lengths, *,
                       block_elements: int = BLOCK_ELEMENTS) -> np.ndarray:
    """Q x G chamfer similarity (whiten_mtd ``cf``): s(q, g) = (1/|q|) sum_{i in q} max_{j in g} <q_i, g_j>
    with frames L2-normalised; in float32 as ``DistEvaluator.cal_sim_chamfer`` (max over the gallery
    frames, sum over the query frames, divided by the query's frame count)."""
    return video_similarity(query_feats, query_lengths, gallery_feats, gallery_lengths, similarity="chamfer",
                            block_elements=block_elements)


def group_frames(video_ids: Sequence) -> tuple[list, np.ndarray]:
    """(video ids in order, frames per video) of a per-frame id column whose videos are consecutive runs
    (as ``read_index("svd", ...)`` lists them); ValueError when a video's frames are not consecutive."""
    ids = np.asarray(video_ids, dtype=object)
    if ids.size == 0:
        return [], np.zeros(0, dtype=np.int64)
    starts = np.flatnonzero(np.concatenate([[True], ids[1:] != ids[:-1]]))
    runs = ids[starts].tolist()
    if len(set(runs)) != len(runs):
        dup = next(v for i, v in enumerate(runs) if v in runs[:i])
        raise ValueError(f"the frames of video {dup!r} are not consecutive")
    return runs, np.diff(np.concatenate([starts, [ids.size]])).astype(np.int64)


def svd_test_view(images_uint8, *, resize: int = 256, crop: int = 224,
                  imagenet_normalize: bool = False) -> torch.Tensor:
    """whiten_mtd's SVD test transform on a batch of N x H x W x C uint8 frames -> N x C x crop x crop float32.

    Resize(resize) (shorter side to ``resize``, longer side ``int(resize * long / short)``; bilinear,
    antialiased on tensors where torchvision used PIL) -> CenterCrop(crop) -> [0, 1].
    Quirk (spec section 7): the official test transform has **no** ImageNet Normalize although training
    normalises; ``imagenet_normalize=True`` adds it (the consistent choice), the default reproduces the paper.
    """
    return center_crop_view(to_float(images_uint8), resize=resize, crop=crop,
                            mean=IMAGENET_MEAN if imagenet_normalize else None, std=IMAGENET_STD)


def _labeled_pairs(query_ids, gallery_ids, distractors: np.ndarray, groundtruth) -> tuple[np.ndarray, ...]:
    """(query, gallery, label) arrays of the labeled entries of each query's ranking, sorted by gallery index."""
    where: dict = {}
    for g, (vid, is_distractor) in enumerate(zip(gallery_ids, distractors)):
        if not is_distractor:
            where.setdefault(vid, []).append(g)
    pairs = [(i, g, int(label)) for i, qid in enumerate(query_ids)
             for cid, label in (groundtruth.get(qid) or {}).items() for g in where.get(cid, ())]
    arr = np.array(pairs, dtype=np.int64).reshape(-1, 3)
    arr = arr[np.lexsort((arr[:, 0], arr[:, 1]))]
    return arr[:, 0], arr[:, 1], arr[:, 2]


def video_retrieval_metrics(query_feats, query_lengths, query_ids: Sequence, gallery_feats, gallery_lengths,
                            gallery_ids: Sequence, groundtruth: dict, *, distractors=None,
                            similarity: str = "chamfer", ks: Sequence[int] = (100,),
                            block_elements: int = BLOCK_ELEMENTS) -> dict[str, float]:
    """mAP of near-duplicate video retrieval exactly as whiten_mtd's ``DistEvaluator`` (single process), percent.

    Videos: per-frame features and lengths (module docstring); ``query_ids`` / ``gallery_ids`` name them;
    ``groundtruth`` = ``{query id: {candidate id: label}}`` (``df.attrs["groundtruth"]`` of the svd reader);
    ``distractors``: bool per gallery video (None: none), the unlabeled videos of the full evaluation.

    Each query's ranked list holds (1) every non-distractor gallery video listed in its ground truth, with
    that label (other labeled videos are left out), and (2) every distractor, label 0, whatever the ground
    truth says. The list is sorted by descending similarity with Python's stable sort, i.e. ties keep the
    official single-process order: labeled entries (gallery order) before distractors. AP (``APScorer``) of
    a list = sum over relevant entries (label > 0) of precision at their position, divided by the number of
    relevant entries **within the list**; 0 when it has none (such a query still counts, as 0).
    ``map_top{k}`` cuts each list to its first k entries before scoring; ``map_topinf`` scores it whole.
    The mean over queries is taken in float32 (``SmoothedValue.avg``) and multiplied by 100.
    Also returns ``n_queries`` and ``n_queries_without_positive`` (those scored 0 in ``map_topinf``).

    Streams the gallery: labeled entries are scored first, then each distractor block only updates, per
    relevant entry, the count of distractors ranked above it; memory is O(block + Q x labeled).
    Differences from the official code: its 8-process run orders exact ties by rank shard, not as here; its
    ``--topk`` given on the command line arrives as strings and crashes (here any positive ints).
    """
    query, gallery = _Videos(query_feats, query_lengths, "query"), _Videos(gallery_feats, gallery_lengths, "gallery")
    query_ids, gallery_ids = list(query_ids), list(gallery_ids)
    if len(query_ids) != len(query) or len(gallery_ids) != len(gallery):
        raise ValueError(f"{len(query_ids)} query ids for {len(query)} query videos or {len(gallery_ids)} gallery "
                         f"ids for {len(gallery)} gallery videos")
    ks = [int(k) for k in ks]
    if any(k < 1 for k in ks):
        raise ValueError(f"ks must be positive integers, got {ks}")
    if len(query) == 0:
        raise ValueError("no query videos")
    dis = np.zeros(len(gallery), bool) if distractors is None else np.asarray(distractors, dtype=bool).reshape(-1)
    if dis.shape != (len(gallery),):
        raise ValueError(f"distractors must have one flag per gallery video ({len(gallery)}), got {dis.shape}")

    pq, pg, plabel = _labeled_pairs(query_ids, gallery_ids, dis, groundtruth)
    pscore = np.empty(len(pq), dtype=np.float32)
    labeled = np.unique(pg)
    for idx, scores in _score_blocks(query, gallery, labeled, similarity, block_elements):
        lo, hi = np.searchsorted(pg, [idx[0], idx[-1] + 1])
        pscore[lo:hi] = scores[pq[lo:hi], np.searchsorted(idx, pg[lo:hi])]

    rel = np.flatnonzero(plabel > 0)  # only the relevant entries' positions matter
    ahead = np.zeros(len(rel), dtype=np.int64)  # entries ranked before each relevant entry
    if len(rel):
        chunk = max(1, block_elements // len(rel))
        for idx, scores in _score_blocks(query, gallery, np.flatnonzero(dis), similarity, block_elements):
            for s in range(0, len(idx), chunk):  # a distractor tied with a labeled entry ranks after it
                ahead += (scores[pq[rel], s:s + chunk] > pscore[rel, None]).sum(1)

    aps = {k: np.zeros(len(query)) for k in [*ks, "inf"]}
    for i in range(len(query)):
        mine, mine_rel = np.flatnonzero(pq == i), np.flatnonzero(pq[rel] == i)
        s, g = pscore[mine], pg[mine]
        for n, k in zip(mine_rel, rel[mine_rel]):  # labeled entries ahead: higher score, or tied and earlier
            ahead[n] += int(((s > pscore[k]) | ((s == pscore[k]) & (g < pg[k]))).sum())
        pos = np.sort(ahead[mine_rel]) + 1  # 1-based positions of the query's relevant entries
        for k in aps:
            kept = pos if k == "inf" else pos[pos <= k]
            if kept.size:
                aps[k][i] = float(np.sum(np.arange(1, kept.size + 1) / kept) / kept.size)
    out = {f"map_top{k}": 100.0 * torch.tensor(v.tolist(), dtype=torch.float32).mean().item()
           for k, v in aps.items()}
    out["n_queries"] = len(query)
    out["n_queries_without_positive"] = int((aps["inf"] == 0).sum())
    return out
