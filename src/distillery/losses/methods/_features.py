"""Helpers shared by the classification method modules (not a plug-in: the leading underscore keeps the
registry from importing it)."""

from __future__ import annotations

from torch import Tensor

FEATURES = ("embedding", "pooled")


def check_feature(feature: str, method: str) -> str:
    """Validate a ``feature=`` argument (which ModelOutput vector a relational method compares)."""
    if feature not in FEATURES:
        raise ValueError(f"{method}: feature must be one of {FEATURES}, got {feature!r}")
    return feature


def stage_shapes(shapes: dict, key: str, method: str, skip_first: bool = True) -> list:
    """Probed shapes of ``shapes[key]`` (``feats`` / ``preact_feats``) without entry 0 (the stem on the zoo's
    CIFAR/ImageNet nets, the first stage on the embedded convnets), as mdistiller's ``feats[1:]``."""
    stages = list(shapes.get(key) or [])[1 if skip_first else 0:]
    if not stages:
        raise ValueError(f"{method} needs the networks' {key}[1:] (stage feature maps); this network has "
                         f"{len(shapes.get(key) or [])} entries in {key}")
    return stages


def patch_logits(out, method: str) -> Tensor:
    """SDD region logits B x C x N of a ModelOutput; a clear error when the model has no SPP."""
    logits = out.extras.get("patch_logits")
    if logits is None:
        raise ValueError(f"{method} needs SDD patch logits: build both networks with model_options "
                         f"{{spp: [1, 2, 4]}} (or [1, 2], [1])")
    return logits
