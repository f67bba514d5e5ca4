"""Batch samplers: the P x K identity sampler (D3still RandomIdentitySampler), S2SD's class-balanced sampler and a
plain shuffled batcher."""

from __future__ import annotations

from collections import defaultdict

import numpy as np

from distillery.data import streams


def identity_batches(labels: np.ndarray, p: int, k: int, *, seed: int, epoch: int) -> list[np.ndarray]:
    """P x K batches of positions into ``labels`` for one epoch.

    D3still's algorithm: each identity's positions are shuffled (identities with fewer than K items are
    sampled with replacement up to K) and cut into chunks of K (remainder dropped); then P identities that
    still have chunks are drawn at random, repeatedly, until fewer than P identities remain. Seeded by
    (seed, epoch). Every batch has exactly P distinct identities with K items each.
    """
    if p < 2 or k < 1:
        raise ValueError(f"identity sampler needs P >= 2 and K >= 1, got P={p}, K={k}")
    rng = np.random.default_rng([seed, epoch, 7919])
    by_label: dict[int, list[int]] = defaultdict(list)
    for pos, label in enumerate(labels):
        by_label[int(label)].append(pos)
    if len(by_label) < p:
        raise ValueError(f"identity sampler needs at least P={p} classes, the split has {len(by_label)}; "
                         f"lower training.ids_per_batch")
    chunks: dict[int, list[np.ndarray]] = {}
    for label in sorted(by_label):
        pos = np.array(by_label[label])
        pos = rng.choice(pos, size=k, replace=True) if len(pos) < k else rng.permutation(pos)
        chunks[label] = [pos[i:i + k] for i in range(0, len(pos) - k + 1, k)]
    batches = []
    available = [label for label in sorted(chunks) if chunks[label]]
    while len(available) >= p:
        chosen = rng.choice(available, size=p, replace=False)
        batches.append(np.concatenate([chunks[int(c)].pop() for c in chosen]))
        available = [label for label in available if chunks[label]]
    return batches


def shuffled_batches(n: int, batch_size: int, *, seed: int, epoch: int, drop_last: bool = True) -> list[np.ndarray]:
    """A seeded permutation of range(n) cut into batches (the KD loader: shuffle, drop_last)."""
    order = np.random.default_rng([seed, epoch, 104729]).permutation(n)
    stop = (n // batch_size) * batch_size if drop_last else n
    return [order[i:i + batch_size] for i in range(0, stop, batch_size)]


def class_balanced_batches(labels: np.ndarray, batch_size: int, samples_per_class: int, *, seed: int,
                           epoch: int) -> list[np.ndarray]:
    """S2SD's ``class_random`` batches of positions into ``labels`` for one epoch.

    floor(N / batch_size) batches; each makes batch_size / samples_per_class draws of a class, uniformly over
    the distinct labels **with replacement** (a class drawn twice contributes 2 x samples_per_class items), and
    for each draw samples_per_class positions of that class uniformly **with replacement** (an image may appear
    twice). Seeded by (seed, epoch) (the official sampler uses Python ``random`` seeded once per run).
    """
    labels = np.asarray(labels).reshape(-1)
    if samples_per_class < 1 or batch_size < samples_per_class or batch_size % samples_per_class:
        raise ValueError(f"class-balanced sampler needs samples_per_class >= 1 dividing batch_size, got "
                         f"batch_size={batch_size}, samples_per_class={samples_per_class}")
    classes, codes = np.unique(labels, return_inverse=True)
    if len(classes) < 2:
        raise ValueError(f"class-balanced sampler needs at least 2 classes, the split has {len(classes)}")
    rng = np.random.default_rng([seed, epoch, 15485863])
    order = np.argsort(codes, kind="stable")  # positions grouped by class
    counts = np.bincount(codes)
    starts = np.cumsum(counts) - counts
    n_batches, draws = len(labels) // batch_size, batch_size // samples_per_class
    drawn = rng.integers(len(classes), size=(n_batches, draws))
    offsets = rng.integers(counts[drawn][..., None], size=(n_batches, draws, samples_per_class))
    positions = order[starts[drawn][..., None] + offsets]
    return [batch.reshape(-1) for batch in positions]


def group_runs(groups: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(first position, length) of each run of equal consecutive values of ``groups`` (frames of a video)."""
    groups = np.asarray(groups)
    starts = np.flatnonzero(np.concatenate([[True], groups[1:] != groups[:-1]])) if groups.size else \
        np.zeros(0, np.int64)
    return starts, np.diff(np.concatenate([starts, [groups.size]])).astype(np.int64)


def one_per_group(groups: np.ndarray, *, seed: int, epoch: int) -> np.ndarray:
    """One uniformly random position per group for one epoch (whiten_mtd's SVD sampler: one random frame of
    each video), in group order.

    ``groups``: contiguous group ids 0..G-1 per position, each group's positions consecutive (frames of a
    video). Group g draws ``first[g] + floor(u * count[g])``, u a :func:`uniforms` value of (seed,
    streams.FRAME, epoch, g): a pure function of (seed, epoch, video), like ``random.randint(0, n - 1)`` of the
    official sampler (which seeds Python's RNG by rank).
    """
    from distillery.data.transforms import uniforms

    groups = np.asarray(groups, dtype=np.int64)
    if groups.size == 0:
        return groups
    starts, counts = group_runs(groups)
    if not np.array_equal(groups[starts], np.arange(len(starts))):
        raise ValueError("groups must be 0..G-1 with each group's positions consecutive (frames of one video)")
    u = uniforms(seed, streams.FRAME, epoch, np.arange(len(starts)), 1)[:, 0]
    return starts + np.floor(u * counts).astype(np.int64)
