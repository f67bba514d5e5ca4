"""Train views: the batched gather equals flip -> pad -> crop -> normalise -> erase image by image, draws are a
pure function of (seed, stream, view, index) with the documented distributions."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from distillery.data.transforms import (ViewBatch, ViewParams, ViewSpec, apply_views, eval_view, normalize, resize,
                                        to_float, train_views, uniforms)


def test_hand_checked_flip_pad_crop():
    """4 x 4 image 0..15, padding 1, flipped, crop (top 0, left 2): out[a][b] = padded[a][3 - b]."""
    image = np.arange(16, dtype=np.uint8).reshape(1, 4, 4, 1)
    spec = ViewSpec(4, mean=(0.0,), std=(1.0,), padding=1)
    out = apply_views(image, spec, [ViewParams(True, 0, 2, None)])
    expected = torch.tensor([[0, 0, 0, 0], [2, 1, 0, 0], [6, 5, 4, 0], [10, 9, 8, 0]], dtype=torch.float32) / 255
    assert torch.equal(out[0, 0], expected)


def test_hand_checked_erase_box_is_zero_after_normalisation():
    image = np.full((1, 4, 4, 1), 255, dtype=np.uint8)
    spec = ViewSpec(4, mean=(0.5,), std=(0.5,))
    out = apply_views(image, spec, [ViewParams(False, 0, 0, (1, 2, 2, 1))])[0, 0]
    expected = torch.ones(4, 4)
    expected[1:3, 2] = 0.0
    assert torch.equal(out, expected)


def _reference(images, spec, params):
    """The transform image by image, as torchvision composes it."""
    x = resize(to_float(images), spec.resolution)
    p, r, out = spec.padding, spec.resolution, []
    for i, prm in enumerate(params):
        img = x[i].flip(-1) if prm.flip else x[i]
        img = F.pad(img, (p, p, p, p))[:, prm.crop_top:prm.crop_top + r, prm.crop_left:prm.crop_left + r]
        img = normalize(img[None], spec)[0]
        if prm.erase is not None:
            top, left, h, w = prm.erase
            img[:, top:top + h, left:left + w] = 0.0
        out.append(img)
    return torch.stack(out)


def test_batched_views_equal_image_by_image_reference():
    images = np.random.default_rng(0).integers(0, 256, size=(64, 10, 10, 2), dtype=np.uint8)
    spec = ViewSpec(8, mean=(0.3, 0.6), std=(0.2, 0.4), padding=2, erase_prob=0.7)
    params = spec.draw_batch(5, 1, 3, np.arange(100, 164))
    assert params.flip.any() and not params.flip.all() and (params.erase[:, 2] > 0).sum() > 10
    assert torch.equal(apply_views(images, spec, params), _reference(images, spec, list(params)))
    assert torch.equal(train_views(images, np.arange(100, 164), spec, seed=5, stream=1, view=3, device="cpu"),
                       apply_views(images, spec, [params[i] for i in range(64)]))


def test_draws_are_pure_and_batch_equals_single():
    spec = ViewSpec(16, padding=3, erase_prob=0.5)
    batch = spec.draw_batch(7, 2, 4, [9, 3, 9, 12])
    assert [spec.draw(7, 2, 4, i) for i in (9, 3, 9, 12)] == [batch[i] for i in range(4)]
    assert batch[0] == batch[2]
    assert ViewBatch.from_params(list(batch)).erase.tolist() == batch.erase.tolist()
    others = [spec.draw_batch(*key, range(50)) for key in [(8, 2, 4), (7, 1, 4), (7, 2, 5)]]
    base = spec.draw_batch(7, 2, 4, range(50))
    for other in others:
        assert not np.array_equal(other.crop_top, base.crop_top) or not np.array_equal(other.flip, base.flip)


M64, GOLDEN = (1 << 64) - 1, 0x9E3779B97F4A7C15


def _mix(z):
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & M64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & M64
    return z ^ (z >> 31)


def _uniform(seed, stream, view, index, column):
    """The documented hash in plain Python integers."""
    key = 0
    for part in (seed, stream, view, index):
        key = _mix(key ^ ((part + GOLDEN) & M64))
    return (_mix((key + GOLDEN * (column + 1)) & M64) >> 11) * 2.0 ** -53


def test_uniforms_match_the_scalar_definition_and_golden_values():
    u = uniforms(0, 0, 0, [0, 1, 2**40], 2)
    expected = [[_uniform(0, 0, 0, i, c) for c in range(2)] for i in (0, 1, 2**40)]
    assert u.tolist() == expected
    assert u.tolist() == [[0.40713339556004036, 0.39869474402429095], [0.9246954368541701, 0.8249570206462881],
                          [0.7347410033547861, 0.02346389946100691]]
    assert uniforms(5, 1, 3, [7], 4).tolist() == [[_uniform(5, 1, 3, 7, c) for c in range(4)]]


def test_uniforms_moments():
    big = uniforms(1, 2, 3, np.arange(200_000), 3)
    assert big.min() >= 0.0 and big.max() < 1.0
    np.testing.assert_allclose(big.mean(axis=0), 0.5, atol=3e-3)
    np.testing.assert_allclose(big.var(axis=0), 1 / 12, atol=2e-3)
    assert abs(np.corrcoef(big[:, 0], big[:, 1])[0, 1]) < 0.01


@pytest.mark.parametrize("padding", [0, 2])
def test_draw_distributions(padding):
    spec = ViewSpec(16, padding=padding, erase_prob=0.5)
    batch = spec.draw_batch(0, 0, 0, np.arange(20_000))
    assert abs(batch.flip.mean() - 0.5) < 0.015
    for offsets in (batch.crop_top, batch.crop_left):
        counts = np.bincount(offsets, minlength=2 * padding + 1) / len(offsets)
        assert len(counts) == 2 * padding + 1
        np.testing.assert_allclose(counts, 1 / (2 * padding + 1), atol=0.015)
    top, left, h, w = batch.erase.T
    drawn = h > 0
    assert 0.45 < drawn.mean() <= 0.5  # erase_prob, less the rare draws where no attempt fits
    assert ((h < 16) & (w < 16) & (top + h <= 16) & (left + w <= 16) & (top >= 0) & (left >= 0))[drawn].all()
    area = (h * w)[drawn] / 256
    assert area.min() > 0.01 and area.max() < 0.4


def test_eval_view_on_device_argument():
    images = np.random.default_rng(1).integers(0, 256, size=(3, 12, 12, 1), dtype=np.uint8)
    spec = ViewSpec(6, mean=(0.5,), std=(0.25,))
    expected = (F.interpolate(torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255, size=(6, 6),
                              mode="bilinear", antialias=True) - 0.5) / 0.25
    torch.testing.assert_close(eval_view(images, spec, device="cpu"), expected)
