"""Replayable views (bit-identical replays, hand-checked flips/crops) and the P x K sampler's invariants."""

import numpy as np
import torch

from distillery.data.samplers import identity_batches, shuffled_batches
from distillery.data.transforms import ViewParams, ViewSpec, apply_views, eval_view, train_views


def _images(n=4, size=6):
    return np.arange(n * size * size, dtype=np.uint8).reshape(n, size, size, 1)


def test_replayed_view_is_bit_identical():
    spec = ViewSpec(resolution=6, mean=(0.5,), std=(0.25,), padding=2, erase_prob=0.5)
    imgs = _images()
    a = train_views(imgs, [10, 11, 12, 13], spec, seed=3, stream=1, view=7)
    params = [spec.draw(3, 1, 7, i) for i in [10, 11, 12, 13]]
    b = apply_views(imgs, spec, params)
    assert torch.equal(a, b)
    c = train_views(imgs, [10, 11, 12, 13], spec, seed=3, stream=2, view=7)
    assert not torch.equal(a, c)  # another stream is another augmentation


def test_flip_and_crop_by_hand():
    spec = ViewSpec(resolution=3, mean=(0.0,), std=(1.0,), padding=1)
    img = np.arange(9, dtype=np.uint8).reshape(1, 3, 3, 1)
    out = apply_views(img, spec, [ViewParams(flip=True, crop_top=0, crop_left=0, erase=None)])
    expected = torch.tensor([[0, 0, 0], [0, 2, 1], [0, 5, 4]], dtype=torch.float32) / 255
    assert torch.equal(out[0, 0], expected)


def test_eval_view_normalises():
    spec = ViewSpec(resolution=6, mean=(0.5,), std=(0.5,))
    out = eval_view(np.full((1, 6, 6, 1), 255, np.uint8), spec)
    assert out.shape == (1, 1, 6, 6) and torch.allclose(out, torch.ones_like(out))


def test_identity_batches_have_p_ids_with_k_each():
    labels = np.repeat(np.arange(6), [9, 8, 8, 5, 3, 12])
    batches = identity_batches(labels, p=3, k=4, seed=0, epoch=0)
    assert batches
    for batch in batches:
        ids, counts = np.unique(labels[batch], return_counts=True)
        assert len(ids) == 3 and (counts == 4).all()
    again = identity_batches(labels, p=3, k=4, seed=0, epoch=0)
    assert all(np.array_equal(x, y) for x, y in zip(batches, again))
    other_epoch = identity_batches(labels, p=3, k=4, seed=0, epoch=1)
    assert not all(np.array_equal(x, y) for x, y in zip(batches, other_epoch))


def test_shuffled_batches_drop_last():
    batches = shuffled_batches(10, 3, seed=0, epoch=0)
    assert [len(b) for b in batches] == [3, 3, 3]
    assert len(set(np.concatenate(batches))) == 9
