"""Batched tensor transforms on decoded uint8 images, with replayable per-sample random parameters.

Every random choice of a view (flip, crop offset, erasing box) is a function of
``(seed, stream, view, image_index)`` (a counter-based hash, :func:`uniforms`, vectorised over a batch), so a
view can be reported and re-applied bit-identically (the teacher-output cache relies on this). ``stream``
separates independent views of one image in one step (D3still augments the student's and the teacher's KD
images independently); ``view`` is usually the epoch.

Train pipeline (D3still ``make_dataloader``): Resize((r, r)) -> RandomHorizontalFlip(0.5) -> Pad(p, fill 0)
-> RandomCrop(r) -> [0, 1] -> Normalize(mean, std) -> RandomErasing(prob, value = mean in normalised space,
i.e. 0). Test: Resize((r, r)) -> [0, 1] -> Normalize. Resizing works on tensors (bilinear, antialiased).
Every step after the uint8 upload runs batched on ``device`` (the GPU when training on one).

``augment="ssl"``: the SSL-style views of whiten_mtd's SVD recipe instead (``data/ssl_views.py``; image by
image); ``ViewSpec.pair`` gives its two asymmetric views. ``test_view="center_crop"``: whiten_mtd's SVD test
transform (Resize(r * 256 / 224), CenterCrop(r), [0, 1]; ``test_normalize`` adds Normalize, see
:func:`center_crop_view`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np
import torch
import torch.nn.functional as F

from distillery.utils.device import to_device

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
ERASE_ATTEMPTS = 10  # torchvision RandomErasing's box search


@dataclass(frozen=True)
class ViewParams:
    """The random choices of one augmented view (enough to replay it exactly)."""

    flip: bool
    crop_top: int
    crop_left: int
    erase: tuple[int, int, int, int] | None  # top, left, height, width in output pixels


@dataclass(frozen=True)
class ViewBatch:
    """The random choices of the views of a batch, as arrays; an erase row (0, 0, 0, 0) means no box."""

    flip: np.ndarray  # N bool
    crop_top: np.ndarray  # N int64
    crop_left: np.ndarray  # N int64
    erase: np.ndarray  # N x 4 int64: top, left, height, width in output pixels

    def __len__(self) -> int:
        return len(self.flip)

    def __getitem__(self, i: int) -> ViewParams:
        box = tuple(int(v) for v in self.erase[i])
        return ViewParams(bool(self.flip[i]), int(self.crop_top[i]), int(self.crop_left[i]),
                          box if box[2] and box[3] else None)

    @classmethod
    def from_params(cls, params: list[ViewParams]) -> "ViewBatch":
        erase = [p.erase if p.erase is not None else (0, 0, 0, 0) for p in params]
        return cls(np.array([p.flip for p in params], bool), np.array([p.crop_top for p in params], np.int64),
                   np.array([p.crop_left for p in params], np.int64), np.array(erase, np.int64).reshape(-1, 4))


@dataclass(frozen=True)
class ViewSpec:
    """How one network sees an image: resolution, normalisation and (train) augmentation strength."""

    resolution: int
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD
    padding: int = 0
    flip_prob: float = 0.5
    erase_prob: float = 0.0
    augment: str = "pad_crop"  # pad_crop (D3still) | ssl (data/ssl_views.py)
    rrc_scale: tuple[float, float] = (0.4, 1.0)  # ssl: RandomResizedCrop area range
    blur_prob: float = 1.0  # ssl: Gaussian blur probability (view 1 of whiten_mtd's pair)
    solarize_prob: float = 0.0  # ssl: solarize probability
    test_view: str = "resize"  # resize (Resize(r), Normalize) | center_crop (whiten_mtd SVD)
    test_normalize: bool = True  # center_crop: Normalize too (whiten_mtd's SVD evaluation does not)

    def __post_init__(self):
        if self.augment not in ("pad_crop", "ssl"):
            raise ValueError(f"augment must be 'pad_crop' or 'ssl', got {self.augment!r}")
        if self.test_view not in ("resize", "center_crop"):
            raise ValueError(f"test_view must be 'resize' or 'center_crop', got {self.test_view!r}")

    def pair(self) -> tuple["ViewSpec", "ViewSpec"]:
        """The specs of a two-view method's views: whiten_mtd's asymmetric SVD pair for ``ssl`` (view 1 blur
        p 1, no solarize; view 2 blur p 0.1, solarize p 0.2), else this spec twice."""
        if self.augment != "ssl":
            return self, self
        return replace(self, blur_prob=1.0, solarize_prob=0.0), replace(self, blur_prob=0.1, solarize_prob=0.2)

    def draw(self, seed: int, stream: int, view: int, image_index: int) -> ViewParams:
        """Draw the random parameters of one view of one image, deterministically."""
        return self.draw_batch(seed, stream, view, [image_index])[0]

    def draw_batch(self, seed: int, stream: int, view: int, image_indices) -> ViewBatch:
        """The views of ``image_indices``, vectorised (image by image the same values as :meth:`draw`).

        Uniforms of each image (:func:`uniforms`, columns): 0 flip (< flip_prob); 1, 2 crop top and left
        (uniform integers in 0..2 padding); if erase_prob > 0, 3 erase (< erase_prob) and 4 per attempt of
        torchvision RandomErasing's box search: area fraction U(0.02, 0.33), aspect ratio log-uniform in
        (0.3, 3.3), h = round(sqrt(area * ratio)), w = round(sqrt(area / ratio)) (round half to even, as
        Python's round); the first of 10 attempts with h < r and w < r gives the box, its top and left
        uniform integers; no fitting attempt = no box.
        """
        if self.augment == "ssl":
            raise ValueError("an ssl ViewSpec draws with data.ssl_views.draw_ssl_batch (it needs the image size); "
                             "use train_views")
        n_erase = 1 + 4 * ERASE_ATTEMPTS if self.erase_prob > 0 else 0
        u = uniforms(seed, stream, view, image_indices, 3 + n_erase)
        span = 2 * self.padding + 1
        flip = u[:, 0] < self.flip_prob
        top, left = np.floor(u[:, 1] * span).astype(np.int64), np.floor(u[:, 2] * span).astype(np.int64)
        erase = np.zeros((len(u), 4), np.int64)
        if n_erase:
            erase = _erase_boxes(u[:, 3] < self.erase_prob, u[:, 4:].reshape(len(u), ERASE_ATTEMPTS, 4),
                                 self.resolution)
        return ViewBatch(flip, top, left, erase)


_MASK64 = (1 << 64) - 1
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


def _mix(z: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser on uint64 arrays (wrapping arithmetic)."""
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def uniforms(seed: int, stream: int, view: int, image_indices, n: int) -> np.ndarray:
    """len(image_indices) x n float64 uniforms in [0, 1): splitmix64 hashes of (seed, stream, view, image
    index, column), 53 bits each. A pure function: the same arguments give the same numbers on any machine."""
    with np.errstate(over="ignore"):
        key = np.zeros(1, np.uint64)
        for part in (seed, stream, view):
            key = _mix(key ^ (np.uint64(int(part) & _MASK64) + _GOLDEN))
        index = np.asarray(image_indices, dtype=np.int64).reshape(-1, 1).astype(np.uint64)
        key = _mix(key ^ (index + _GOLDEN))
        bits = _mix(key + _GOLDEN * np.arange(1, n + 1, dtype=np.uint64))
    return (bits >> np.uint64(11)).astype(np.float64) * 2.0 ** -53


def _erase_boxes(apply: np.ndarray, u: np.ndarray, size: int, scale=(0.02, 0.33), ratio=(0.3, 3.3)) -> np.ndarray:
    """N x 4 boxes (top, left, h, w) from N x attempts x 4 uniforms (see ViewSpec.draw_batch); 0s = no box."""
    log_lo, log_hi = math.log(ratio[0]), math.log(ratio[1])
    area = size * size * (scale[0] + (scale[1] - scale[0]) * u[..., 0])
    aspect = np.exp(log_lo + (log_hi - log_lo) * u[..., 1])
    h = np.round(np.sqrt(area * aspect)).astype(np.int64)
    w = np.round(np.sqrt(area / aspect)).astype(np.int64)
    fits = (h < size) & (w < size)
    rows, first = np.arange(len(u)), fits.argmax(axis=1)
    h, w, keep = h[rows, first], w[rows, first], fits[rows, first] & apply
    top = np.floor(u[rows, first, 2] * (size - h + 1)).astype(np.int64)
    left = np.floor(u[rows, first, 3] * (size - w + 1)).astype(np.int64)
    return np.where(keep[:, None], np.stack([top, left, h, w], axis=1), 0)


def to_float(images_uint8: np.ndarray | torch.Tensor, device=None) -> torch.Tensor:
    """N x H x W x C uint8 (numpy or tensor) -> N x C x H x W float32 in [0, 1], on ``device`` (default: where
    the input is; the uint8 batch is uploaded first, a quarter of the float32 bytes)."""
    x = images_uint8 if isinstance(images_uint8, torch.Tensor) else torch.as_tensor(np.ascontiguousarray(images_uint8))
    if device is not None:
        x = to_device(x, device)
    return x.permute(0, 3, 1, 2).float().div_(255.0)


def resize(x: torch.Tensor, resolution: int) -> torch.Tensor:
    if x.shape[-2:] == (resolution, resolution):
        return x
    return F.interpolate(x, size=(resolution, resolution), mode="bilinear", align_corners=False, antialias=True)


def normalize(x: torch.Tensor, spec: ViewSpec) -> torch.Tensor:
    channels = x.shape[1]
    mean = spec.mean[:channels] if len(spec.mean) >= channels else spec.mean * channels
    std = spec.std[:channels] if len(spec.std) >= channels else spec.std * channels
    mean, std = (torch.tensor(v, dtype=x.dtype, device=x.device).view(1, -1, 1, 1) for v in (mean, std))
    return (x - mean) / std


def eval_view(images_uint8, spec: ViewSpec, device=None) -> torch.Tensor:
    """Test-time view: resize to the spec's resolution and normalise (``test_view="center_crop"``:
    :func:`center_crop_view` at r * 256 / 224 -> r). Returns N x C x r x r float32."""
    if spec.test_view == "center_crop":
        return center_crop_view(to_float(images_uint8, device), resize=round(spec.resolution * 256 / 224),
                                crop=spec.resolution, mean=spec.mean if spec.test_normalize else None, std=spec.std)
    return normalize(resize(to_float(images_uint8, device), spec.resolution), spec)


def center_crop_view(x: torch.Tensor, *, resize: int, crop: int, mean=None, std=None) -> torch.Tensor:
    """N x C x H x W float [0, 1] -> N x C x crop x crop: Resize(resize) (shorter side to ``resize``, longer
    side ``int(resize * long / short)``; bilinear, antialiased on tensors where torchvision used PIL) ->
    CenterCrop(crop) -> Normalize(mean, std) when ``mean`` is given (whiten_mtd's SVD test transform has none)."""
    if resize < crop:
        raise ValueError(f"resize {resize} is smaller than crop {crop}")
    h, w = x.shape[-2:]
    size_long = int(resize * max(h, w) / min(h, w))
    size = (resize, size_long) if h <= w else (size_long, resize)
    if (h, w) != size:
        x = F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=True)
    top, left = int(round((size[0] - crop) / 2.0)), int(round((size[1] - crop) / 2.0))
    x = x[:, :, top:top + crop, left:left + crop]
    if mean is not None:
        x = normalize(x, ViewSpec(crop, mean=tuple(mean), std=tuple(std)))
    return x.contiguous()


def apply_views(images_uint8, spec: ViewSpec, params: ViewBatch | list[ViewParams], device=None) -> torch.Tensor:
    """Train-time views with the given per-image parameters. Returns N x C x r x r float32 on ``device``.

    Flip + pad + crop is one gather: output column j of a flipped image reads padded column
    ``W_p - 1 - (left + j)`` (flipping before padding equals flipping the padded image), so the result is
    the same as flipping, padding and cropping image by image.
    """
    from distillery.data.ssl_views import SSLViewBatch, apply_ssl_views

    if isinstance(params, SSLViewBatch):
        return apply_ssl_views(images_uint8, spec, params, device)
    if not isinstance(params, ViewBatch):
        params = ViewBatch.from_params(list(params))
    x = resize(to_float(images_uint8, device), spec.resolution)
    r, p = spec.resolution, spec.padding
    if p:
        x = F.pad(x, (p, p, p, p), value=0.0)
    n, c, hp, wp = x.shape
    steps = np.arange(r)
    rows = params.crop_top[:, None] + steps
    cols = params.crop_left[:, None] + steps
    cols = np.where(params.flip[:, None], wp - 1 - cols, cols)
    index = torch.from_numpy((rows[:, :, None] * wp + cols[:, None, :]).reshape(n, 1, r * r)).to(x.device)
    out = normalize(x.reshape(n, c, hp * wp).gather(2, index.expand(n, c, r * r)).view(n, c, r, r), spec)
    top, left, h, w = params.erase.T[:, :, None]
    if (h * w).any():
        inside = ((steps >= top) & (steps < top + h))[:, :, None] & ((steps >= left) & (steps < left + w))[:, None, :]
        out = out.masked_fill(torch.from_numpy(inside[:, None]).to(x.device), 0.0)  # the mean, in normalised space
    return out


def train_views(images_uint8, image_indices, spec: ViewSpec, *, seed: int, stream: int, view: int,
                device=None) -> torch.Tensor:
    """Draw and apply one augmented view per image (see module docstring for the seeding)."""
    if spec.augment == "ssl":
        from distillery.data.ssl_views import draw_ssl_batch

        shape = images_uint8.shape
        return apply_views(images_uint8, spec, draw_ssl_batch(spec, seed, stream, view, image_indices, shape[1],
                                                              shape[2]), device)
    return apply_views(images_uint8, spec, spec.draw_batch(seed, stream, view, image_indices), device)
