"""Helpers shared by the zoo modules (not a plug-in: the leading underscore keeps the registry from importing it)."""

from __future__ import annotations

import math

import torch.nn as nn
from torch import Tensor

from distillery.models.output import ModelOutput
from distillery.models.spp import patch_logits


def init_convs_normal(module: nn.Module) -> None:
    """WRN / VGG / MobileNetV2 / ImageNet-ResNet init: conv weight N(0, sqrt(2 / (k_h·k_w·C_out))), conv bias 0,
    BatchNorm2d weight 1 and bias 0."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            n = m.kernel_size[0] * m.kernel_size[1] * m.out_channels
            nn.init.normal_(m.weight, 0.0, math.sqrt(2.0 / n))
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


def init_convs_kaiming(module: nn.Module) -> None:
    """CIFAR ResNet init: conv Kaiming normal (fan_out, relu); BatchNorm2d / GroupNorm weight 1, bias 0."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


def run_stage(stage: nn.Sequential, x: Tensor) -> tuple[Tensor, Tensor]:
    """Run blocks that return (post-activation, pre-activation); returns the last block's pair."""
    pre = x
    for block in stage:
        x, pre = block(x)
    return x, pre


def classification_output(
    feats: list[Tensor],
    pooled: Tensor,
    classifier: nn.Module,
    preact_feats: list[Tensor] | None = None,
    spp_input: Tensor | None = None,
    spp_scales: tuple[int, ...] | None = None,
) -> ModelOutput:
    """ModelOutput of a classification net (embedding = pooled); adds SDD ``patch_logits`` when spp_scales is set."""
    extras = {}
    if spp_scales is not None:
        extras["patch_logits"] = patch_logits(spp_input, classifier, spp_scales)
    return ModelOutput(
        feats=feats,
        pooled=pooled,
        embedding=pooled,
        logits=classifier(pooled),
        preact_feats=preact_feats if preact_feats is not None else [],
        extras=extras,
    )


def load_pretrained(model: nn.Module, state_dict: dict, skip_prefix: str | None = None) -> None:
    """Load ``state_dict`` into ``model``, leaving out keys that start with ``skip_prefix``; every other model key
    must be present (raises RuntimeError naming the missing or unexpected keys)."""
    if skip_prefix is not None:
        state_dict = {k: v for k, v in state_dict.items() if not k.startswith(skip_prefix)}
    result = model.load_state_dict(state_dict, strict=False)
    missing = [k for k in result.missing_keys if skip_prefix is None or not k.startswith(skip_prefix)]
    if missing or result.unexpected_keys:
        raise RuntimeError(f"pretrained weights do not fit: missing {missing}, unexpected {result.unexpected_keys}")
