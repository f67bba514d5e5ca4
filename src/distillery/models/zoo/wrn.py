"""Pre-activation Wide ResNets wrn_16_1, wrn_16_2, wrn_40_1, wrn_40_2 (mdistiller ``models/cifar/wrn.py``).

Parameter names equal mdistiller's (``block{i}.layer.{j}.bn1`` ..., ``convShortcut`` only where the width
changes), so its checkpoints load strictly. Dropout (always 0 in mdistiller) is not implemented.
"""

from __future__ import annotations

import torch.nn as nn
from torch import Tensor

from distillery.models.output import ModelOutput
from distillery.models.registry import register_model
from distillery.models.spp import parse_scales
from distillery.models.zoo._common import classification_output, init_convs_normal


class WideBlock(nn.Module):
    """BN-ReLU-conv3x3-BN-ReLU-conv3x3 + shortcut; returns the raw sum (no activation after it).

    The shortcut is the identity of the raw input when widths agree, else a 1x1 conv of the *activated* input.
    """

    def __init__(self, c_in: int, c_out: int, stride: int):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(c_in)
        self.relu1 = nn.ReLU(inplace=True)
        self.conv1 = nn.Conv2d(c_in, c_out, kernel_size=3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.relu2 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(c_out, c_out, kernel_size=3, stride=1, padding=1, bias=False)
        self.equal_in_out = c_in == c_out
        self.convShortcut = None
        if not self.equal_in_out:
            self.convShortcut = nn.Conv2d(c_in, c_out, kernel_size=1, stride=stride, padding=0, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        act = self.relu1(self.bn1(x))
        out = self.conv2(self.relu2(self.bn2(self.conv1(act))))
        return (x if self.equal_in_out else self.convShortcut(act)) + out


class NetworkBlock(nn.Module):
    def __init__(self, n: int, c_in: int, c_out: int, stride: int):
        super().__init__()
        blocks = [WideBlock(c_in if i == 0 else c_out, c_out, stride if i == 0 else 1) for i in range(n)]
        self.layer = nn.Sequential(*blocks)

    def forward(self, x: Tensor) -> Tensor:
        return self.layer(x)


class WideResNet(nn.Module):
    """conv3x3(3->16), three NetworkBlocks of n = (depth - 4) / 6 blocks (16k, 32k, 64k; strides 1, 2, 2),
    final BN-ReLU, global mean, fc.

    ModelOutput (32x32): feats = [conv1 16@32, raw block sums 16k@32, 32k@16, 64k@8] (no activation),
    preact_feats = [conv1, block2.layer[0].bn1(f1), block3.layer[0].bn1(f2), bn1(f3)], pooled = mean of
    ReLU(bn1(f3)) (official avg_pool2d(8), equal at 32x32). spp: patch logits from ReLU(bn1(f3)).
    Quirk (reproduced): the preact BNs are called a second time, so in train mode their running statistics
    are updated twice per forward (bn1 of block2/3 layer 0 and the final bn1).
    """

    def __init__(self, depth: int, widen_factor: int, num_classes: int = 100, spp=None):
        super().__init__()
        if (depth - 4) % 6:
            raise ValueError(f"depth must be 6n+4, got {depth}")
        n = (depth - 4) // 6
        widths = [16, 16 * widen_factor, 32 * widen_factor, 64 * widen_factor]
        self.spp_scales = parse_scales(spp)
        self.conv1 = nn.Conv2d(3, widths[0], kernel_size=3, stride=1, padding=1, bias=False)
        self.block1 = NetworkBlock(n, widths[0], widths[1], 1)
        self.block2 = NetworkBlock(n, widths[1], widths[2], 2)
        self.block3 = NetworkBlock(n, widths[2], widths[3], 2)
        self.bn1 = nn.BatchNorm2d(widths[3])
        self.relu = nn.ReLU(inplace=True)
        self.fc = nn.Linear(widths[3], num_classes)
        init_convs_normal(self)
        nn.init.zeros_(self.fc.bias)

    def get_bn_before_relu(self) -> list[nn.BatchNorm2d]:
        """OFD margins: block2.layer[0].bn1, block3.layer[0].bn1, bn1."""
        return [self.block2.layer[0].bn1, self.block3.layer[0].bn1, self.bn1]

    def forward(self, x: Tensor) -> ModelOutput:
        f0 = self.conv1(x)
        f1 = self.block1(f0)
        f2 = self.block2(f1)
        f3 = self.block3(f2)
        final = self.relu(self.bn1(f3))
        preact = [f0, self.block2.layer[0].bn1(f1), self.block3.layer[0].bn1(f2), self.bn1(f3)]
        return classification_output([f0, f1, f2, f3], final.mean((2, 3)), self.fc, preact, final, self.spp_scales)


def _factory(depth: int, widen_factor: int):
    def build(num_classes: int = 100, spp=None) -> WideResNet:
        return WideResNet(depth, widen_factor, num_classes=num_classes, spp=spp)

    return build


for _depth, _k in ((16, 1), (16, 2), (40, 1), (40, 2)):
    register_model(f"wrn_{_depth}_{_k}")(_factory(_depth, _k))
