"""Clustering quality: NMI of seeded faiss k-means, as S2SD's ``metrics/nmi.py`` computes it."""

from __future__ import annotations

import numpy as np

from .search import as_embeddings, as_labels, l2_normalize


def normalized_mutual_info(labels_true, labels_pred) -> float:
    """NMI with arithmetic-mean normalisation, a fraction in [0, 1] (sklearn's ``normalized_mutual_info_score``).

    MI = sum_ij (n_ij/N) log(N n_ij / (a_i b_j)) over non-empty cells (terms below float eps set to 0, sum
    clipped at 0); NMI = MI / ((H(true) + H(pred)) / 2), natural logs. Both labellings with a single class
    (or empty) give 1.0; MI = 0 gives 0.0. The contingency table is kept sparse.
    """
    _, a = np.unique(as_labels(labels_true), return_inverse=True)
    _, b = np.unique(as_labels(labels_pred), return_inverse=True)
    a, b = a.reshape(-1), b.reshape(-1)
    if len(a) != len(b):
        raise ValueError("both labellings need one entry per sample")
    n_a, n_b = int(a.max(initial=-1)) + 1, int(b.max(initial=-1)) + 1
    if n_a == n_b and n_a <= 1:
        return 1.0
    if n_a == 1 or n_b == 1:
        return 0.0
    cells, nz = np.unique(a.astype(np.int64) * n_b + b, return_counts=True)
    pi, pj = np.bincount(a).astype(np.float64), np.bincount(b).astype(np.float64)
    n = float(len(a))
    nz = nz.astype(np.float64)
    outer = pi[cells // n_b] * pj[cells % n_b]
    p = nz / n
    mi = p * (np.log(nz) - np.log(n)) + p * (-np.log(outer) + np.log(n) + np.log(n))
    mi = float(np.clip(np.where(np.abs(mi) < np.finfo(np.float64).eps, 0.0, mi).sum(), 0.0, None))
    if mi == 0.0:
        return 0.0
    h_a = float(-np.sum((pi / n) * (np.log(pi) - np.log(n))))
    h_b = float(-np.sum((pj / n) * (np.log(pj) - np.log(n))))
    return mi / float(np.mean([h_a, h_b]))


def kmeans_assign(x: np.ndarray, k: int, seed: int, niter: int = 20) -> np.ndarray:
    """faiss k-means as S2SD sets it up (``faiss.Clustering``, ``niter``, min/max points per centroid 1/1e9,
    i.e. no subsampling), seeded; returns each row's nearest centroid (L2), shape N int64."""
    import faiss

    x = np.ascontiguousarray(x, dtype=np.float32)
    if not 1 <= k <= x.shape[0]:
        raise ValueError(f"k-means needs 1 <= k <= number of samples ({x.shape[0]}), got k = {k}")
    km = faiss.Clustering(x.shape[1], k)
    km.niter = niter
    km.min_points_per_centroid = 1
    km.max_points_per_centroid = 1_000_000_000
    km.seed = int(seed)
    km.train(x, faiss.IndexFlatL2(x.shape[1]))
    centroids = faiss.vector_float_to_array(km.centroids).reshape(k, x.shape[1])
    index = faiss.IndexFlatL2(x.shape[1])
    index.add(centroids)
    return index.search(x, 1)[1].reshape(-1).astype(np.int64)


def nmi(embeddings, labels, seed: int, *, n_clusters: int | None = None, normalize: bool = True,
        niter: int = 20) -> float:
    """NMI (percent) between class labels and faiss k-means clusters of the embeddings.

    embeddings: N x D (torch or numpy), L2-normalised first unless ``normalize=False`` (S2SD clusters its
    embeddings as the network outputs them, already normalised). k = ``n_clusters``, default the number of
    distinct labels (S2SD passes the number of *training* classes, e.g. 11,318 on SOP whose test set has
    11,316: give ``n_clusters`` to reproduce that). ``seed`` is faiss' k-means seed (S2SD leaves faiss'
    default, 1234). Raises ValueError when k exceeds N (faiss refuses) or on shape mismatch.
    """
    x = as_embeddings(embeddings, "embeddings")
    if normalize:
        x = l2_normalize(x)
    y = as_labels(labels, "labels")
    if len(y) != x.shape[0]:
        raise ValueError("labels must have one entry per embedding row")
    k = len(np.unique(y)) if n_clusters is None else int(n_clusters)
    clusters = kmeans_assign(x.cpu().numpy(), k, seed, niter)
    return 100.0 * normalized_mutual_info(y, clusters)
