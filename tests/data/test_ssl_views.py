"""SSL-style replayable views (whiten_mtd's SVD TwoCropsTransform) and the per-epoch one-frame-per-video draw."""

import math

import numpy as np
import pytest
import torch
import torchvision.transforms.v2.functional as TF

from distillery.data.samplers import one_per_group
from distillery.data.ssl_views import SSLViewBatch, _crop_boxes, apply_ssl_views, draw_ssl_batch
from distillery.data.transforms import IMAGENET_MEAN, IMAGENET_STD, ViewSpec, apply_views, eval_view, train_views
from distillery.evaluation.video import svd_test_view

SPEC = ViewSpec(8, augment="ssl")


def _images(n=6, size=12, seed=0):
    return np.random.default_rng(seed).integers(0, 256, size=(n, size, size, 3)).astype(np.uint8)


def test_a_recorded_ssl_view_replays_bit_identically():
    images, rows = _images(), np.arange(10, 16)
    x = train_views(images, rows, SPEC, seed=3, stream=4, view=2)
    params = draw_ssl_batch(SPEC, 3, 4, 2, rows, 12, 12)
    assert torch.equal(apply_views(images, SPEC, params), x)
    assert x.shape == (6, 3, 8, 8)
    # an image's view depends on its own index only, not on its batch neighbours
    torch.testing.assert_close(train_views(images[2:3], rows[2:3], SPEC, seed=3, stream=4, view=2), x[2:3],
                               rtol=0, atol=0)
    assert not torch.equal(train_views(images, rows, SPEC, seed=3, stream=4, view=3), x)


def test_pair_is_whiten_mtds_asymmetric_svd_views():
    v1, v2 = SPEC.pair()
    assert (v1.blur_prob, v1.solarize_prob, v2.blur_prob, v2.solarize_prob) == (1.0, 0.0, 0.1, 0.2)
    rows = np.arange(4000)
    p1, p2 = (draw_ssl_batch(v, 0, 3, 0, rows, 32, 32) for v in (v1, v2))
    assert (p1.sigma >= 0.1).all() and (p1.sigma <= 2.0).all() and not p1.solarize.any()
    assert abs((p2.sigma > 0).mean() - 0.1) < 0.02 and abs(p2.solarize.mean() - 0.2) < 0.02
    for p in (p1, p2):
        assert abs(p.jitter.mean() - 0.8) < 0.02 and abs(p.gray.mean() - 0.2) < 0.02 and abs(p.flip.mean() - 0.5) < 0.03
        b, c, s, h = p.factors.T
        assert b.min() >= 0.6 and b.max() <= 1.4 and s.min() >= 0.8 and s.max() <= 1.2 and abs(h).max() <= 0.1
        assert sorted(p.order[0].tolist()) == [0, 1, 2, 3]
    pad = ViewSpec(8)
    assert pad.pair() == (pad, pad)


def test_random_resized_crop_boxes_follow_torchvision():
    """Area fraction in [0.4, 1], aspect in [3/4, 4/3] (up to rounding), inside the image; an impossible draw
    falls back to the centre crop clamped to the ratio range (a 10 x 40 image: 10 x 13)."""
    rows = np.arange(2000)
    p = draw_ssl_batch(SPEC, 1, 0, 0, rows, 30, 40)
    top, left, h, w = p.box.T
    assert (top >= 0).all() and (left >= 0).all() and (top + h <= 30).all() and (left + w <= 40).all()
    area = h * w / 1200
    assert area.min() >= 0.38 and area.max() <= 1.0 and (w / h).min() > 0.7 and (w / h).max() < 1.43
    never = np.ones((1, 10, 4)) * np.array([0.99, 0.99, 0.5, 0.5])  # every attempt too wide for 10 x 40
    assert _crop_boxes(never, 10, 40, (0.4, 1.0)).tolist() == [[0, 13, 10, 13]]


def test_ssl_view_by_hand():
    """One view with fixed parameters = crop, resize, grayscale, solarize, flip, normalise done by hand."""
    images = _images(1, 12)
    params = SSLViewBatch(box=np.array([[2, 1, 8, 9]]), flip=np.array([True]), jitter=np.array([False]),
                          factors=np.ones((1, 4)), order=np.arange(4)[None], gray=np.array([True]),
                          sigma=np.array([0.0]), solarize=np.array([True]))
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255
    crop = torch.nn.functional.interpolate(x[:, :, 2:10, 1:10], size=(8, 8), mode="bilinear", align_corners=False,
                                           antialias=True).clamp(0, 1)
    gray = TF.rgb_to_grayscale(crop, num_output_channels=3)
    sol = torch.where(gray >= 128 / 255, 1 - gray, gray).flip(-1)
    expected = (sol - torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)) / torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    torch.testing.assert_close(apply_ssl_views(images, SPEC, params), expected)


def test_blur_on_tiny_views_keeps_the_kernel_inside_the_image():
    params = draw_ssl_batch(ViewSpec(8, augment="ssl", blur_prob=1.0), 0, 0, 0, np.arange(8), 12, 12)
    params = SSLViewBatch(**{**params.__dict__, "sigma": np.full(8, 2.0)})
    assert torch.isfinite(apply_ssl_views(_images(8), ViewSpec(8, augment="ssl"), params)).all()
    with pytest.raises(ValueError, match="draw_ssl_batch"):
        SPEC.draw_batch(0, 0, 0, [1])


def test_center_crop_test_view_is_the_svd_test_transform():
    frames = _images(3, 20)
    raw = ViewSpec(14, test_view="center_crop", test_normalize=False)
    torch.testing.assert_close(eval_view(frames, raw), svd_test_view(frames, resize=round(14 * 256 / 224), crop=14))
    normed = ViewSpec(14, test_view="center_crop")
    torch.testing.assert_close(eval_view(frames, normed),
                               svd_test_view(frames, resize=16, crop=14, imagenet_normalize=True))
    with pytest.raises(ValueError, match="test_view"):
        ViewSpec(8, test_view="five_crop")


def test_one_frame_per_video():
    groups = np.array([0, 0, 0, 1, 2, 2])
    picks = np.stack([one_per_group(groups, seed=0, epoch=e) for e in range(300)])
    assert picks.shape == (300, 3)
    assert set(picks[:, 0]) == {0, 1, 2} and set(picks[:, 1]) == {3} and set(picks[:, 2]) == {4, 5}
    assert abs((picks[:, 0] == 0).mean() - 1 / 3) < 0.1  # uniform over the video's frames
    np.testing.assert_array_equal(one_per_group(groups, seed=0, epoch=7), picks[7])  # a pure function
    assert not np.array_equal(one_per_group(groups, seed=1, epoch=7), picks[7]) or \
        not np.array_equal(one_per_group(groups, seed=2, epoch=7), picks[7])
    with pytest.raises(ValueError, match="consecutive"):
        one_per_group(np.array([0, 1, 0]), seed=0, epoch=0)
    assert math.isclose(len(one_per_group(np.zeros(0, int), seed=0, epoch=0)), 0)
