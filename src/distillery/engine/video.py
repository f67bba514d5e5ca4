"""Video datasets (SVD, whiten_mtd): the whitening fit's teacher descriptors and video retrieval metrics of a
network on the prepared frames."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import torch

from distillery.data import streams
from distillery.data.cache import PreparedDataset
from distillery.data.transforms import ViewSpec, train_views
from distillery.data.samplers import group_runs
from distillery.engine.experiment import embed, eval_rows, train_data
from distillery.evaluation.video import group_frames, video_retrieval_metrics

PCA_FIT_FRAMES = 60  # svd_pca_learn.py: up to 60 random frames per training video
PCA_FIT_SEED = 0  # svd_pca_learn.py: random.seed(0)


def fit_frames(video_of_row: np.ndarray, *, per_video: int = PCA_FIT_FRAMES, seed: int = PCA_FIT_SEED) -> np.ndarray:
    """Positions of up to ``per_video`` distinct random frames of each video (``video_of_row``: the video of
    each position, frames consecutive), ascending within a video, videos in order."""
    if len(video_of_row) == 0:
        return np.zeros(0, np.int64)
    rng = np.random.default_rng(seed)
    return np.concatenate([np.sort(rng.choice(np.arange(start, start + n), min(n, per_video), replace=False))
                           for start, n in zip(*group_runs(video_of_row))])


@torch.no_grad()
def ssl_fit_embeddings(teacher: torch.nn.Module, prepared: PreparedDataset, spec: ViewSpec, *, batch_size: int = 256,
                       device=torch.device("cpu")) -> np.ndarray:
    """The teacher descriptors whiten_mtd's SVD PCA is fitted on (svd_pca_learn.py): up to 60 random frames of
    every training video (fixed seed), each in one SSL view (``spec`` with blur p 0.5, solarize p 0.2: its
    transform), teacher in eval mode. Returns n_frames x D float32."""
    data = train_data(prepared)
    picked = data.rows[fit_frames(data.groups)]
    spec = replace(spec, augment="ssl", blur_prob=0.5, solarize_prob=0.2)
    teacher.eval().to(device)
    chunks = []
    for start in range(0, len(picked), batch_size):
        batch = picked[start:start + batch_size]
        x = train_views(prepared.images[batch], batch, spec, seed=PCA_FIT_SEED, stream=streams.PCA_FIT, view=0,
                        device=device)
        chunks.append(teacher(x).embedding.float().cpu())
    return torch.cat(chunks).numpy()


def video_metrics(model, prepared: PreparedDataset, spec, params: dict, device, scales=(1.0,),
                  similarity: str | None = None) -> dict:
    """Near-duplicate video retrieval as whiten_mtd's SVD evaluator: ``model``'s per-frame descriptors of the
    query and gallery frames (the prepared frames, i.e. the reader's first ``max_frames`` with ``stride``),
    video ``similarity`` (``data.<ds>.video_similarity``: chamfer (default), mean, max) and
    :func:`video_retrieval_metrics` against the test ground truth, unlabeled gallery videos as distractors: ``map_top100``, ``map_topinf``
    (percent), ``n_queries``, ``n_queries_without_positive``."""
    rows, index = eval_rows(prepared), prepared.index
    batch = params["evaluation"]["batch_size"]
    similarity = similarity or "chamfer"
    sides = {}
    for side in ("query", "gallery"):
        feats = embed(model, prepared.images, rows[side], spec, batch_size=batch, device=device, scales=scales)
        ids, lengths = group_frames(index["video_id"].to_numpy()[rows[side]])
        sides[side] = (feats, lengths, ids)
    starts = np.cumsum(sides["gallery"][1]) - sides["gallery"][1]
    distractors = index["distractor"].to_numpy()[rows["gallery"]][starts].astype(bool)
    metrics = video_retrieval_metrics(*sides["query"], *sides["gallery"], prepared.video_groundtruth,
                                      distractors=distractors, similarity=similarity, ks=(100,))
    return {k: round(float(v), 4) if isinstance(v, float) else v for k, v in metrics.items()}
