"""SDD spatial-pyramid pooling and region ("patch") logits (sdd.md section 4).

Region order for scales (1, 2, 4): index 0 = global cell, 1..4 = 2x2 cells (TL, TR, BL, BR), 5..20 = 4x4
cells row-major; N = 21 (5 for (1, 2), 1 for (1,)).
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

VALID_SCALES = ((1, 2, 4), (1, 2), (1,))
_OFFICIAL_SPELLING = {"[1,2,4]": (1, 2, 4), "[1,2]": (1, 2), "[1]": (1,)}


def parse_scales(scales: str | Sequence[int] | None) -> tuple[int, ...] | None:
    """Normalise an SPP option: None (no SPP), a tuple such as (1, 2, 4), or the official M string "[1,2,4]".

    Only the three official pyramids (1,2,4), (1,2), (1,) exist; anything else raises ValueError (the official
    SPP raises NotImplementedError for other M strings, including spellings with spaces).
    """
    if scales is None:
        return None
    if isinstance(scales, str):
        if scales not in _OFFICIAL_SPELLING:
            raise ValueError(f"SPP scales {scales!r}: expected one of {sorted(_OFFICIAL_SPELLING)}")
        return _OFFICIAL_SPELLING[scales]
    parsed = tuple(int(s) for s in scales)
    if parsed not in VALID_SCALES:
        raise ValueError(f"SPP scales {parsed}: expected one of {VALID_SCALES}")
    return parsed


def spp_pool(feat: Tensor, scales: Sequence[int]) -> Tensor:
    """B x D x H x W -> B x D x N region features.

    Quirk (official): the 4x4 level is pooled from the map and the 2x2 / 1x1 levels are pooled from the 4x4
    level, so for H, W not multiples of 4 (overlapping adaptive bins, e.g. 7 -> [0,2),[1,4),[3,6),[5,7))
    region 0 is not the plain global mean; for a 2x2 map the 4x4 level repeats each pixel 4 times.
    """
    p4 = F.adaptive_avg_pool2d(feat, (4, 4))
    levels = [p4 if s == 4 else F.adaptive_avg_pool2d(p4, (s, s)) for s in scales]
    return torch.cat([level.flatten(2) for level in levels], dim=2)


def patch_logits(feat: Tensor, classifier: Callable[[Tensor], Tensor], scales: Sequence[int]) -> Tensor:
    """Region logits B x C x N: every SPP cell vector through the model's own classifier (shared, with bias)."""
    regions = spp_pool(feat, scales)  # B x D x N
    b, d, n = regions.shape
    rows = regions.permute(2, 0, 1).reshape(n * b, d)  # row r = region (r // B) of sample (r % B)
    logits = classifier(rows)
    return logits.reshape(n, b, -1).permute(1, 2, 0)
