"""Global pooling of a B x C x H x W map to B x C: average or GeM (whiten_mtd.md section 4.1)."""

from __future__ import annotations

from torch import Tensor

POOLINGS = ("avg", "gem")


def gem(x: Tensor, p: float = 3.0, eps: float = 1e-6) -> Tensor:
    """Generalised mean over H, W with a fixed (not learnable) exponent ``p``: B x C x H x W -> B x C.

    ``(mean_{h,w} clamp(x, min=eps)^p)^(1/p)``; for ``p == 1`` a plain spatial mean *without* the clamp,
    as whiten_mtd's ``GeM`` (so p = 1 equals average pooling even for negative inputs).
    """
    if p == 1:
        return x.mean(dim=(2, 3))
    return x.clamp(min=eps).pow(p).mean(dim=(2, 3)).pow(1.0 / p)


def global_pool(x: Tensor, pooling: str = "avg", gem_p: float = 3.0) -> Tensor:
    """``avg`` (spatial mean) or ``gem`` (:func:`gem` with exponent ``gem_p``) of a B x C x H x W map."""
    if pooling == "avg":
        return x.mean(dim=(2, 3))
    if pooling == "gem":
        return gem(x, gem_p)
    raise ValueError(f"pooling must be one of {', '.join(POOLINGS)}, got {pooling!r}")


def check_pooling(pooling: str, gem_p: float) -> None:
    """A clear error for an unknown pooling or a non-positive GeM exponent (at model construction)."""
    if pooling not in POOLINGS:
        raise ValueError(f"pooling must be one of {', '.join(POOLINGS)}, got {pooling!r}")
    if pooling == "gem" and not gem_p > 0:
        raise ValueError(f"gem_p must be > 0, got {gem_p!r}")
