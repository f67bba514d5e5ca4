"""CIFAR ShuffleNetV1 (mdistiller ``ShuffleV1``: out planes 240/480/960, blocks 4/8/4, groups 3), as ``shufflev1``.

Parameter names equal mdistiller's; PyTorch default init (as the official).
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from distillery.models.output import ModelOutput
from distillery.models.registry import register_model
from distillery.models.spp import parse_scales
from distillery.models.zoo._common import classification_output, run_stage


def channel_shuffle(x: Tensor, groups: int) -> Tensor:
    """B x C x H x W -> view as B x g x C/g x H x W, swap the two channel axes, flatten back."""
    b, c, h, w = x.shape
    return x.reshape(b, groups, c // groups, h, w).permute(0, 2, 1, 3, 4).reshape(b, c, h, w)


class Bottleneck(nn.Module):
    """Grouped 1x1-BN-ReLU, shuffle, depthwise 3x3-BN-ReLU, grouped 1x1-BN; stride 2 concatenates an
    AvgPool(3, 2, 1) shortcut, stride 1 adds the identity. Returns (ReLU(pre), pre)."""

    def __init__(self, c_in: int, c_out: int, stride: int, groups: int):
        super().__init__()
        self.stride = stride
        mid = int(c_out / 4)
        self.g1 = 1 if c_in == 24 else groups  # the first block after the 24-channel stem is not grouped
        self.conv1 = nn.Conv2d(c_in, mid, kernel_size=1, groups=self.g1, bias=False)
        self.bn1 = nn.BatchNorm2d(mid)
        self.conv2 = nn.Conv2d(mid, mid, kernel_size=3, stride=stride, padding=1, groups=mid, bias=False)
        self.bn2 = nn.BatchNorm2d(mid)
        self.conv3 = nn.Conv2d(mid, c_out, kernel_size=1, groups=groups, bias=False)
        self.bn3 = nn.BatchNorm2d(c_out)
        self.shortcut = nn.Sequential(nn.AvgPool2d(3, stride=2, padding=1)) if stride == 2 else nn.Sequential()

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        out = channel_shuffle(F.relu(self.bn1(self.conv1(x))), self.g1)
        out = F.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        res = self.shortcut(x)
        pre = torch.cat([out, res], 1) if self.stride == 2 else out + res
        return F.relu(pre), pre


class ShuffleNetV1(nn.Module):
    """Stem conv1x1(3->24)+BN+ReLU (no down-sampling), three stages (first block stride 2), global mean, Linear.

    ModelOutput (32x32): feats = [24@32, 240@16, 480@8, 960@4], preact_feats = [stem, pre-ReLU output of the
    last block of each stage], pooled 960 (official avg_pool2d(4), the mean at 32x32). spp: from layer3.
    OFD: mdistiller has neither ``get_stage_channels`` nor ``get_bn_before_relu`` for this net.
    """

    def __init__(self, out_planes=(240, 480, 960), num_blocks=(4, 8, 4), groups: int = 3, num_classes: int = 100,
                 spp=None):
        super().__init__()
        self.spp_scales = parse_scales(spp)
        self.conv1 = nn.Conv2d(3, 24, kernel_size=1, bias=False)
        self.bn1 = nn.BatchNorm2d(24)
        self.in_planes = 24
        self.layer1 = self._make_layer(out_planes[0], num_blocks[0], groups)
        self.layer2 = self._make_layer(out_planes[1], num_blocks[1], groups)
        self.layer3 = self._make_layer(out_planes[2], num_blocks[2], groups)
        self.linear = nn.Linear(out_planes[2], num_classes)

    def _make_layer(self, out_planes: int, n: int, groups: int) -> nn.Sequential:
        layers = []
        for i in range(n):
            concat = self.in_planes if i == 0 else 0  # the stride-2 block concatenates its input
            layers.append(Bottleneck(self.in_planes, out_planes - concat, 2 if i == 0 else 1, groups))
            self.in_planes = out_planes
        return nn.Sequential(*layers)

    def get_bn_before_relu(self):
        raise NotImplementedError("ShuffleNetV1 has no BN-before-ReLU list (mdistiller: not supported by OFD)")

    def forward(self, x: Tensor) -> ModelOutput:
        x = F.relu(self.bn1(self.conv1(x)))
        feats, preact = [x], [x]
        for layer in (self.layer1, self.layer2, self.layer3):
            x, pre = run_stage(layer, x)
            feats.append(x)
            preact.append(pre)
        return classification_output(feats, x.mean((2, 3)), self.linear, preact, x, self.spp_scales)


@register_model("shufflev1")
def shufflev1(num_classes: int = 100, spp=None) -> ShuffleNetV1:
    return ShuffleNetV1(num_classes=num_classes, spp=spp)
