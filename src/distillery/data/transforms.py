"""Batched tensor transforms on decoded uint8 images, with replayable per-sample random parameters.

Every random choice of a view (flip, crop offset, erasing box) is drawn from an RNG seeded by
``(seed, stream, view, image_index)``, so a view can be reported and re-applied bit-identically (the
teacher-output cache relies on this). ``stream`` separates independent views of one image in one step
(D3still augments the student's and the teacher's KD images independently); ``view`` is usually the epoch.

Train pipeline (D3still ``make_dataloader``): Resize((r, r)) -> RandomHorizontalFlip(0.5) -> Pad(p, fill 0)
-> RandomCrop(r) -> [0, 1] -> Normalize(mean, std) -> RandomErasing(prob, value = mean in normalised space,
i.e. 0). Test: Resize((r, r)) -> [0, 1] -> Normalize. Resizing works on tensors (bilinear, antialiased).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class ViewParams:
    """The random choices of one augmented view (enough to replay it exactly)."""

    flip: bool
    crop_top: int
    crop_left: int
    erase: tuple[int, int, int, int] | None  # top, left, height, width in output pixels


@dataclass(frozen=True)
class ViewSpec:
    """How one network sees an image: resolution, normalisation and (train) augmentation strength."""

    resolution: int
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD
    padding: int = 0
    flip_prob: float = 0.5
    erase_prob: float = 0.0

    def draw(self, seed: int, stream: int, view: int, image_index: int) -> ViewParams:
        """Draw the random parameters of one view of one image, deterministically."""
        rng = np.random.default_rng([seed, stream, view, int(image_index)])
        flip = bool(rng.random() < self.flip_prob)
        top = int(rng.integers(0, 2 * self.padding + 1))
        left = int(rng.integers(0, 2 * self.padding + 1))
        erase = None
        if self.erase_prob > 0 and rng.random() < self.erase_prob:
            erase = _draw_erase_box(rng, self.resolution)
        return ViewParams(flip, top, left, erase)


def _draw_erase_box(rng: np.random.Generator, size: int, scale=(0.02, 0.33), ratio=(0.3, 3.3)):
    """torchvision RandomErasing's box search (10 attempts, area fraction ``scale``, log-uniform aspect ratio)."""
    area = size * size
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        erase_area = area * rng.uniform(*scale)
        aspect = math.exp(rng.uniform(*log_ratio))
        h = int(round(math.sqrt(erase_area * aspect)))
        w = int(round(math.sqrt(erase_area / aspect)))
        if h < size and w < size:
            return int(rng.integers(0, size - h + 1)), int(rng.integers(0, size - w + 1)), h, w
    return None


def to_float(images_uint8: np.ndarray | torch.Tensor) -> torch.Tensor:
    """N x H x W x C uint8 (numpy or tensor) -> N x C x H x W float32 in [0, 1]."""
    x = torch.as_tensor(np.ascontiguousarray(images_uint8))
    return x.permute(0, 3, 1, 2).float().div_(255.0)


def resize(x: torch.Tensor, resolution: int) -> torch.Tensor:
    if x.shape[-2:] == (resolution, resolution):
        return x
    return F.interpolate(x, size=(resolution, resolution), mode="bilinear", align_corners=False, antialias=True)


def normalize(x: torch.Tensor, spec: ViewSpec) -> torch.Tensor:
    channels = x.shape[1]
    mean = torch.tensor(spec.mean[:channels] if len(spec.mean) >= channels else spec.mean * channels)
    std = torch.tensor(spec.std[:channels] if len(spec.std) >= channels else spec.std * channels)
    return (x - mean.view(1, -1, 1, 1)) / std.view(1, -1, 1, 1)


def eval_view(images_uint8, spec: ViewSpec) -> torch.Tensor:
    """Test-time view: resize to the spec's resolution and normalise. Returns N x C x r x r float32."""
    return normalize(resize(to_float(images_uint8), spec.resolution), spec)


def apply_views(images_uint8, spec: ViewSpec, params: list[ViewParams]) -> torch.Tensor:
    """Train-time views with the given per-image parameters. Returns N x C x r x r float32."""
    x = resize(to_float(images_uint8), spec.resolution)
    r, p = spec.resolution, spec.padding
    if p:
        x = F.pad(x, (p, p, p, p), value=0.0)
    out = torch.empty(x.shape[0], x.shape[1], r, r)
    for i, prm in enumerate(params):
        img = x[i]
        if prm.flip:
            img = img.flip(-1)
        out[i] = img[:, prm.crop_top:prm.crop_top + r, prm.crop_left:prm.crop_left + r]
    out = normalize(out, spec)
    for i, prm in enumerate(params):
        if prm.erase is not None:
            top, left, h, w = prm.erase
            out[i, :, top:top + h, left:left + w] = 0.0  # the mean, in normalised space
    return out


def train_views(images_uint8, image_indices, spec: ViewSpec, *, seed: int, stream: int, view: int) -> torch.Tensor:
    """Draw and apply one augmented view per image (see module docstring for the seeding)."""
    params = [spec.draw(seed, stream, view, i) for i in image_indices]
    return apply_views(images_uint8, spec, params)
