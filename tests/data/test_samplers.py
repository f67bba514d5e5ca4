"""Batch samplers: S2SD's class-balanced sampler (invariants, replacement, seeding) next to the identity one."""

import numpy as np
import pytest

from distillery.data.samplers import class_balanced_batches, identity_batches

LABELS = np.array([7] * 5 + [3] * 2 + [9] * 9 + [1] * 4)  # 20 items, 4 classes of uneven size


def _groups(batch, spc):
    return batch.reshape(-1, spc)


def test_class_balanced_shape_and_groups():
    batches = class_balanced_batches(LABELS, 6, 2, seed=0, epoch=0)
    assert len(batches) == 20 // 6
    for batch in batches:
        assert batch.shape == (6,) and batch.dtype.kind == "i"
        assert ((batch >= 0) & (batch < 20)).all()
        for group in _groups(batch, 2):  # each draw: samples_per_class positions of one class
            assert len(set(LABELS[group])) == 1


def test_class_balanced_is_seeded_by_seed_and_epoch():
    a = class_balanced_batches(LABELS, 8, 4, seed=1, epoch=2)
    assert all(np.array_equal(x, y) for x, y in zip(a, class_balanced_batches(LABELS, 8, 4, seed=1, epoch=2)))
    assert not all(np.array_equal(x, y) for x, y in zip(a, class_balanced_batches(LABELS, 8, 4, seed=1, epoch=3)))
    assert not all(np.array_equal(x, y) for x, y in zip(a, class_balanced_batches(LABELS, 8, 4, seed=2, epoch=2)))


def test_class_balanced_draws_with_replacement_and_uniform_classes():
    """Classes are drawn uniformly (not by size) with replacement (one class can fill both draws of a batch);
    images with replacement (a 2-image class drawn with 4 samples repeats them)."""
    labels = np.repeat([0, 1, 2, 3], [2, 300, 300, 300])
    batches = class_balanced_batches(labels, 8, 4, seed=0, epoch=0)  # 150 batches, 300 draws
    groups = np.concatenate(batches).reshape(-1, 4)
    share = np.bincount(labels[groups[:, 0]], minlength=4) / len(groups)
    assert np.all(np.abs(share - 0.25) < 0.08), share
    assert any(len(set(labels[b])) == 1 for b in batches)
    small = [g for g in groups if labels[g[0]] == 0]
    assert small and all(set(g) <= {0, 1} for g in small)


def test_class_balanced_errors():
    with pytest.raises(ValueError, match="divid"):
        class_balanced_batches(LABELS, 6, 4, seed=0, epoch=0)
    with pytest.raises(ValueError, match="2 classes"):
        class_balanced_batches(np.zeros(10, dtype=int), 4, 2, seed=0, epoch=0)
    assert class_balanced_batches(LABELS, 40, 2, seed=0, epoch=0) == []  # fewer images than a batch


def test_identity_batches_have_distinct_classes():
    for batch in identity_batches(LABELS, 2, 2, seed=0, epoch=0):
        assert len(set(LABELS[batch])) == 2 and all(np.bincount(LABELS[batch])[c] == 2 for c in set(LABELS[batch]))
