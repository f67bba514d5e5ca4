"""CIFAR MobileNetV2 (mdistiller ``mobile_half``: expansion 6, width 0.5), registered as ``mobilenetv2``.

Parameter names equal mdistiller's (``conv1.0``, ``blocks.{i}.{j}.conv.{k}``, ``conv2.0``, ``classifier.0``).
"""

from __future__ import annotations

import torch.nn as nn
from torch import Tensor

from distillery.models.output import ModelOutput
from distillery.models.registry import register_model
from distillery.models.spp import parse_scales
from distillery.models.zoo._common import classification_output, init_convs_normal

# expansion t (None = the network's T), output channels c, repeats n, first stride s
_SETTING = [(1, 16, 1, 1), (None, 24, 2, 1), (None, 32, 3, 2), (None, 64, 4, 2), (None, 96, 3, 1),
            (None, 160, 3, 2), (None, 320, 1, 1)]


def _conv_bn_relu(c_in: int, c_out: int, kernel: int, stride: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, kernel, stride, kernel // 2, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True)
    )


class InvertedResidual(nn.Module):
    """1x1 expand-BN-ReLU, 3x3 depthwise-BN-ReLU, 1x1 project-BN; identity shortcut when stride 1 and c_in == c_out."""

    def __init__(self, c_in: int, c_out: int, stride: int, expand: int):
        super().__init__()
        hidden = c_in * expand
        self.use_res_connect = stride == 1 and c_in == c_out
        self.conv = nn.Sequential(
            nn.Conv2d(c_in, hidden, 1, 1, 0, bias=False),
            nn.BatchNorm2d(hidden),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden, hidden, 3, stride, 1, groups=hidden, bias=False),
            nn.BatchNorm2d(hidden),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden, c_out, 1, 1, 0, bias=False),
            nn.BatchNorm2d(c_out),
        )

    def forward(self, x: Tensor) -> Tensor:
        return x + self.conv(x) if self.use_res_connect else self.conv(x)


class MobileNetV2(nn.Module):
    """Stem conv3x3/2, seven inverted-residual groups, 1x1 conv to 1280, global mean, Linear(1280, C).

    ModelOutput (32x32, T=6, width 0.5): feats = [stem 16@16, group1 12@16, group2 16@8, group4 48@4,
    group6 160@2] (block outputs; no activation after the projection), preact_feats = [] (mdistiller returns
    none), pooled = mean of conv2's 1280-channel map (official AvgPool2d(2, ceil_mode) = the mean at 32x32).
    spp: patch logits from the conv2 map (2x2 at 32x32, so the 4x4 level repeats pixels).
    """

    def __init__(self, expansion: int = 6, width_mult: float = 0.5, num_classes: int = 100, spp=None):
        super().__init__()
        self.spp_scales = parse_scales(spp)
        c_in = int(32 * width_mult)
        self.conv1 = _conv_bn_relu(3, c_in, 3, 2)
        self.blocks = nn.ModuleList()
        for t, c, n, s in _SETTING:
            c_out = int(c * width_mult)
            layers = []
            for stride in [s] + [1] * (n - 1):
                layers.append(InvertedResidual(c_in, c_out, stride, expansion if t is None else t))
                c_in = c_out
            self.blocks.append(nn.Sequential(*layers))
        last = int(1280 * width_mult) if width_mult > 1.0 else 1280
        self.conv2 = _conv_bn_relu(c_in, last, 1, 1)
        self.classifier = nn.Sequential(nn.Linear(last, num_classes))
        init_convs_normal(self)
        nn.init.normal_(self.classifier[0].weight, 0.0, 0.01)
        nn.init.zeros_(self.classifier[0].bias)

    def get_bn_before_relu(self) -> list[nn.BatchNorm2d]:
        """OFD margins: the projection BN of the last block of groups 1, 2, 4, 6."""
        return [self.blocks[i][-1].conv[-1] for i in (1, 2, 4, 6)]

    def forward(self, x: Tensor) -> ModelOutput:
        out = self.conv1(x)
        feats = [out]
        for i, block in enumerate(self.blocks):
            out = block(out)
            if i in (1, 2, 4, 6):
                feats.append(out)
        final = self.conv2(out)
        return classification_output(feats, final.mean((2, 3)), self.classifier, None, final, self.spp_scales)


@register_model("mobilenetv2")
def mobilenetv2(num_classes: int = 100, spp=None) -> MobileNetV2:
    """mdistiller's ``MobileNetV2`` (= ``mobile_half``: T 6, width 0.5)."""
    return MobileNetV2(6, 0.5, num_classes=num_classes, spp=spp)
