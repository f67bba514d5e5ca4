"""SSL-style replayable views (whiten_mtd's SVD ``TwoCropsTransform``, MoCo v3 / BYOL augmentations).

One view of an image, in the official order:
RandomResizedCrop(r, scale, ratio (3/4, 4/3)) -> RandomApply(ColorJitter(0.4, 0.4, 0.2, 0.1), p 0.8) ->
RandomGrayscale(0.2) -> RandomApply(GaussianBlur(sigma ~ U(0.1, 2)), p blur) -> RandomApply(Solarize, p
solarize) -> RandomHorizontalFlip(0.5) -> [0, 1] -> Normalize(mean, std).
whiten_mtd's asymmetric pair (``ViewSpec.pair``): view 1 blur p 1.0, no solarize; view 2 blur p 0.1,
solarize p 0.2.

Every random choice is a column of :func:`distillery.data.transforms.uniforms` of (seed, stream, view, image
index), so a view replays bit-identically (:func:`draw_ssl_batch` then :func:`apply_ssl_views`).
Differences from the PIL pipeline (documented, not numerically checked): the image is a float tensor resized
with antialiased bilinear interpolation; the blur is a separable Gaussian kernel of size 2 ceil(3 sigma) + 1
(PIL's ``GaussianBlur(radius=sigma)`` approximates the same Gaussian with box filters); solarize inverts
values >= 128 / 255 of the float image (PIL: of the uint8 image). On 1-channel images saturation, hue and
grayscale are no-ops.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torchvision.transforms.v2.functional as TF

RRC_ATTEMPTS = 10
RATIO = (3.0 / 4.0, 4.0 / 3.0)
JITTER = {"brightness": 0.4, "contrast": 0.4, "saturation": 0.2, "hue": 0.1}
JITTER_PROB, GRAYSCALE_PROB, FLIP_PROB = 0.8, 0.2, 0.5
SIGMA = (0.1, 2.0)
# uniform columns: RRC attempts x (area, log-ratio, top, left) | flip | jitter on | 4 factors | 4 order keys |
# grayscale | blur on | sigma | solarize
_C_FLIP = 4 * RRC_ATTEMPTS
_C_JITTER = _C_FLIP + 1
_C_FACTORS = _C_JITTER + 1
_C_ORDER = _C_FACTORS + 4
_C_GRAY = _C_ORDER + 4
_C_BLUR, _C_SIGMA, _C_SOLARIZE = _C_GRAY + 1, _C_GRAY + 2, _C_GRAY + 3
N_UNIFORMS = _C_SOLARIZE + 1


@dataclass(frozen=True)
class SSLViewBatch:
    """The random choices of N SSL views (enough to replay them exactly)."""

    box: np.ndarray  # N x 4 int64: top, left, height, width of the crop in source pixels
    flip: np.ndarray  # N bool
    jitter: np.ndarray  # N bool: colour jitter applied
    factors: np.ndarray  # N x 4 float64: brightness, contrast, saturation factors, hue shift
    order: np.ndarray  # N x 4 int64: the jitter operations' order (0 brightness ... 3 hue)
    gray: np.ndarray  # N bool
    sigma: np.ndarray  # N float64: blur sigma; 0 = no blur
    solarize: np.ndarray  # N bool

    def __len__(self) -> int:
        return len(self.flip)


def _crop_boxes(u: np.ndarray, height: int, width: int, scale: tuple[float, float]) -> np.ndarray:
    """torchvision ``RandomResizedCrop.get_params`` per row of ``u`` (N x attempts x 4 uniforms): the first
    attempt whose box fits, else the centre crop clamped to the ratio range."""
    area = height * width
    target = area * (scale[0] + (scale[1] - scale[0]) * u[..., 0])
    log_lo, log_hi = math.log(RATIO[0]), math.log(RATIO[1])
    aspect = np.exp(log_lo + (log_hi - log_lo) * u[..., 1])
    w = np.round(np.sqrt(target * aspect)).astype(np.int64)
    h = np.round(np.sqrt(target / aspect)).astype(np.int64)
    fits = (w > 0) & (w <= width) & (h > 0) & (h <= height)
    rows, first = np.arange(len(u)), fits.argmax(axis=1)
    ok = fits[rows, first]
    h, w = h[rows, first], w[rows, first]
    top = np.floor(u[rows, first, 2] * (height - h + 1)).astype(np.int64)
    left = np.floor(u[rows, first, 3] * (width - w + 1)).astype(np.int64)
    ratio = width / height
    if ratio < RATIO[0]:
        fw, fh = width, int(round(width / RATIO[0]))
    elif ratio > RATIO[1]:
        fh, fw = height, int(round(height * RATIO[1]))
    else:
        fw, fh = width, height
    fallback = np.array([(height - fh) // 2, (width - fw) // 2, fh, fw], np.int64)
    return np.where(ok[:, None], np.stack([top, left, h, w], axis=1), fallback)


def draw_ssl_batch(spec, seed: int, stream: int, view: int, image_indices, height: int, width: int) -> SSLViewBatch:
    """The SSL views of ``image_indices`` (source images ``height`` x ``width``) under ``spec`` (a ViewSpec with
    ``augment="ssl"``: ``rrc_scale``, ``blur_prob``, ``solarize_prob``)."""
    from distillery.data.transforms import uniforms

    u = uniforms(seed, stream, view, image_indices, N_UNIFORMS)
    box = _crop_boxes(u[:, :_C_FLIP].reshape(len(u), RRC_ATTEMPTS, 4), height, width, tuple(spec.rrc_scale))
    lo = np.array([1 - JITTER["brightness"], 1 - JITTER["contrast"], 1 - JITTER["saturation"], -JITTER["hue"]])
    hi = np.array([1 + JITTER["brightness"], 1 + JITTER["contrast"], 1 + JITTER["saturation"], JITTER["hue"]])
    factors = lo + (hi - lo) * u[:, _C_FACTORS:_C_FACTORS + 4]
    blur = u[:, _C_BLUR] < spec.blur_prob
    sigma = np.where(blur, SIGMA[0] + (SIGMA[1] - SIGMA[0]) * u[:, _C_SIGMA], 0.0)
    return SSLViewBatch(box=box, flip=u[:, _C_FLIP] < FLIP_PROB, jitter=u[:, _C_JITTER] < JITTER_PROB,
                        factors=factors, order=np.argsort(u[:, _C_ORDER:_C_ORDER + 4], axis=1, kind="stable"),
                        gray=u[:, _C_GRAY] < GRAYSCALE_PROB, sigma=sigma,
                        solarize=u[:, _C_SOLARIZE] < spec.solarize_prob)


def _jitter(x: torch.Tensor, factors: np.ndarray, order: np.ndarray) -> torch.Tensor:
    """ColorJitter with fixed factors, in ``order``; x is 1 x C x H x W in [0, 1]."""
    rgb = x.shape[1] == 3
    for op in order:
        f = float(factors[op])
        if op == 0:
            x = TF.adjust_brightness(x, f)
        elif op == 1:
            x = TF.adjust_contrast(x, f)
        elif op == 2 and rgb:
            x = TF.adjust_saturation(x, f)
        elif op == 3 and rgb:
            x = TF.adjust_hue(x, f)
    return x


def _one_view(image: torch.Tensor, params: SSLViewBatch, i: int, resolution: int) -> torch.Tensor:
    """1 x C x H x W float [0, 1] source -> 1 x C x r x r, before normalisation."""
    top, left, h, w = (int(v) for v in params.box[i])
    x = torch.nn.functional.interpolate(image[:, :, top:top + h, left:left + w], size=(resolution, resolution),
                                        mode="bilinear", align_corners=False, antialias=True).clamp_(0.0, 1.0)
    if params.jitter[i]:
        x = _jitter(x, params.factors[i], params.order[i])
    if params.gray[i] and x.shape[1] == 3:
        x = TF.rgb_to_grayscale(x, num_output_channels=3)
    if params.sigma[i] > 0:
        sigma = float(params.sigma[i])
        radius = min(math.ceil(3 * sigma), resolution - 1)  # reflect padding needs radius < size
        x = TF.gaussian_blur(x, kernel_size=2 * radius + 1, sigma=sigma)
    if params.solarize[i]:
        x = torch.where(x >= 128 / 255, 1.0 - x, x)
    return x.flip(-1) if params.flip[i] else x


def apply_ssl_views(images_uint8, spec, params: SSLViewBatch, device=None) -> torch.Tensor:
    """N x H x W x C uint8 -> N x C x r x r float32 normalised SSL views with the given parameters."""
    from distillery.data.transforms import normalize, to_float

    x = to_float(images_uint8, device)
    out = torch.cat([_one_view(x[i:i + 1], params, i, spec.resolution) for i in range(len(x))]) if len(x) else \
        x.new_zeros((0, x.shape[1], spec.resolution, spec.resolution))
    return normalize(out, spec)
