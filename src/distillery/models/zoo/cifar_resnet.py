"""CIFAR ResNets resnet8 ... resnet110, resnet8x4, resnet32x4 (mdistiller ``models/cifar/resnet.py``, spec 4.1).

Parameter names equal mdistiller's, so its CIFAR teacher checkpoints load strictly.
"""

from __future__ import annotations

import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from distillery.models.output import ModelOutput
from distillery.models.registry import register_model
from distillery.models.spp import parse_scales
from distillery.models.zoo._common import classification_output, init_convs_kaiming, run_stage


def _conv3x3(c_in: int, c_out: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(c_in, c_out, kernel_size=3, stride=stride, padding=1, bias=False)


class BasicBlock(nn.Module):
    """conv3x3-BN-ReLU-conv3x3-BN + shortcut; returns (ReLU(sum), sum)."""

    def __init__(self, c_in: int, planes: int, stride: int = 1, downsample: nn.Module | None = None):
        super().__init__()
        self.conv1 = _conv3x3(c_in, planes, stride)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = _conv3x3(planes, planes)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        out = self.bn2(self.conv2(self.relu(self.bn1(self.conv1(x)))))
        pre = out + (x if self.downsample is None else self.downsample(x))
        return F.relu(pre), pre


class CifarResNet(nn.Module):
    """3x3 stem (widths[0]) and three stages of n = (depth - 2) / 6 BasicBlocks (widths[1:], strides 1, 2, 2).

    ModelOutput at 32x32: feats = [stem, layer1, layer2, layer3] (post-ReLU), preact_feats = [stem, pre-ReLU
    residual sums of the last block of each stage], pooled = global mean of layer3 (official AvgPool2d(8), the
    same at 32x32 input; the global mean also accepts other sizes where the official crashes).
    spp: SDD pyramid scales (None, (1, 2), (1, 2, 4), (1,) or "[1,2,4]"); patch logits from the layer3 map.
    """

    def __init__(self, depth: int, widths: tuple[int, int, int, int], num_classes: int = 100, spp=None):
        super().__init__()
        if (depth - 2) % 6:
            raise ValueError(f"depth must be 6n+2, got {depth}")
        n = (depth - 2) // 6
        self.spp_scales = parse_scales(spp)
        self.inplanes = widths[0]
        self.conv1 = nn.Conv2d(3, widths[0], kernel_size=3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        self.relu = nn.ReLU(inplace=True)
        self.layer1 = self._make_layer(widths[1], n, 1)
        self.layer2 = self._make_layer(widths[2], n, 2)
        self.layer3 = self._make_layer(widths[3], n, 2)
        self.fc = nn.Linear(widths[3], num_classes)
        init_convs_kaiming(self)

    def _make_layer(self, planes: int, blocks: int, stride: int) -> nn.Sequential:
        downsample = None
        if stride != 1 or self.inplanes != planes:
            downsample = nn.Sequential(
                nn.Conv2d(self.inplanes, planes, kernel_size=1, stride=stride, bias=False), nn.BatchNorm2d(planes)
            )
        layers = [BasicBlock(self.inplanes, planes, stride, downsample)]
        self.inplanes = planes
        layers += [BasicBlock(planes, planes) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def get_bn_before_relu(self) -> list[nn.BatchNorm2d]:
        """OFD margins: bn2 of the last block of layer1..3."""
        return [self.layer1[-1].bn2, self.layer2[-1].bn2, self.layer3[-1].bn2]

    def forward(self, x: Tensor) -> ModelOutput:
        x = self.relu(self.bn1(self.conv1(x)))
        feats, preact = [x], [x]
        for layer in (self.layer1, self.layer2, self.layer3):
            x, pre = run_stage(layer, x)
            feats.append(x)
            preact.append(pre)
        return classification_output(feats, x.mean((2, 3)), self.fc, preact, x, self.spp_scales)


def _factory(depth: int, widths: tuple[int, int, int, int]):
    def build(num_classes: int = 100, spp=None) -> CifarResNet:
        return CifarResNet(depth, widths, num_classes=num_classes, spp=spp)

    return build


for _depth in (8, 14, 20, 32, 44, 56, 110):
    register_model(f"resnet{_depth}")(_factory(_depth, (16, 16, 32, 64)))
register_model("resnet8x4")(_factory(8, (32, 64, 128, 256)))
register_model("resnet32x4")(_factory(32, (32, 64, 128, 256)))
