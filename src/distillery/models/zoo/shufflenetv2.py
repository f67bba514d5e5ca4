"""CIFAR ShuffleNetV2 (mdistiller ``ShuffleV2``, net size 1: 116/232/464/1024, blocks 3/7/3), as ``shufflev2``.

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
from distillery.models.zoo.shufflenetv1 import channel_shuffle


class BasicBlock(nn.Module):
    """Split channels in halves (x1, x2); x2 -> 1x1-BN-ReLU, depthwise 3x3-BN, 1x1-BN(-ReLU); concat with x1;
    shuffle (2 groups). Returns (shuffled output, pre) with pre = cat(x1, BN output before its ReLU) taken
    **before** the shuffle (official quirk: its channel order differs from the output's)."""

    def __init__(self, channels: int):
        super().__init__()
        half = channels // 2
        self.conv1 = nn.Conv2d(half, half, kernel_size=1, bias=False)
        self.bn1 = nn.BatchNorm2d(half)
        self.conv2 = nn.Conv2d(half, half, kernel_size=3, stride=1, padding=1, groups=half, bias=False)
        self.bn2 = nn.BatchNorm2d(half)
        self.conv3 = nn.Conv2d(half, half, kernel_size=1, bias=False)
        self.bn3 = nn.BatchNorm2d(half)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        c = int(x.shape[1] * 0.5)
        x1, x2 = x[:, :c], x[:, c:]
        branch = self.bn3(self.conv3(self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x2)))))))
        out = channel_shuffle(torch.cat([x1, F.relu(branch)], 1), 2)
        return out, torch.cat([x1, branch], 1)


class DownBlock(nn.Module):
    """Two stride-2 branches (depthwise-pointwise and pointwise-depthwise-pointwise), concat, shuffle."""

    def __init__(self, c_in: int, c_out: int):
        super().__init__()
        mid = c_out // 2
        self.conv1 = nn.Conv2d(c_in, c_in, kernel_size=3, stride=2, padding=1, groups=c_in, bias=False)
        self.bn1 = nn.BatchNorm2d(c_in)
        self.conv2 = nn.Conv2d(c_in, mid, kernel_size=1, bias=False)
        self.bn2 = nn.BatchNorm2d(mid)
        self.conv3 = nn.Conv2d(c_in, mid, kernel_size=1, bias=False)
        self.bn3 = nn.BatchNorm2d(mid)
        self.conv4 = nn.Conv2d(mid, mid, kernel_size=3, stride=2, padding=1, groups=mid, bias=False)
        self.bn4 = nn.BatchNorm2d(mid)
        self.conv5 = nn.Conv2d(mid, mid, kernel_size=1, bias=False)
        self.bn5 = nn.BatchNorm2d(mid)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        left = F.relu(self.bn2(self.conv2(self.bn1(self.conv1(x)))))
        right = F.relu(self.bn3(self.conv3(x)))
        right = F.relu(self.bn5(self.conv5(self.bn4(self.conv4(right)))))
        out = channel_shuffle(torch.cat([left, right], 1), 2)
        return out, out  # never the last block of a stage: its "pre" is unused


class ShuffleNetV2(nn.Module):
    """Stem conv1x1(3->24)+BN+ReLU, three stages (DownBlock + n BasicBlocks), conv1x1(464->1024)+BN+ReLU,
    global mean, Linear(1024, C).

    ModelOutput (32x32): feats = [24@32, 116@16, 232@8, 464@4], preact_feats = [stem, unshuffled pre of the
    last block of each stage], pooled = mean of ReLU(bn2(conv2(f3))) (1024; official avg_pool2d(4)).
    spp: patch logits from that 1024-channel map.
    """

    def __init__(self, out_channels=(116, 232, 464, 1024), num_blocks=(3, 7, 3), num_classes: int = 100,
                 spp=None):
        super().__init__()
        self.spp_scales = parse_scales(spp)
        self.conv1 = nn.Conv2d(3, 24, kernel_size=1, bias=False)
        self.bn1 = nn.BatchNorm2d(24)
        self.in_channels = 24
        self.layer1 = self._make_layer(out_channels[0], num_blocks[0])
        self.layer2 = self._make_layer(out_channels[1], num_blocks[1])
        self.layer3 = self._make_layer(out_channels[2], num_blocks[2])
        self.conv2 = nn.Conv2d(out_channels[2], out_channels[3], kernel_size=1, stride=1, padding=0, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels[3])
        self.linear = nn.Linear(out_channels[3], num_classes)

    def _make_layer(self, c_out: int, n: int) -> nn.Sequential:
        layers = [DownBlock(self.in_channels, c_out)] + [BasicBlock(c_out) for _ in range(n)]
        self.in_channels = c_out
        return nn.Sequential(*layers)

    def get_bn_before_relu(self):
        raise NotImplementedError("ShuffleNetV2 has no BN-before-ReLU list (mdistiller: not supported by OFD)")

    def forward(self, x: Tensor) -> ModelOutput:
        x = F.relu(self.bn1(self.conv1(x)))
        feats, preact = [x], [x]
        for layer in (self.layer1, self.layer2, self.layer3):
            x, pre = run_stage(layer, x)
            feats.append(x)
            preact.append(pre)
        final = F.relu(self.bn2(self.conv2(x)))
        return classification_output(feats, final.mean((2, 3)), self.linear, preact, final, self.spp_scales)


@register_model("shufflev2")
def shufflev2(num_classes: int = 100, spp=None) -> ShuffleNetV2:
    return ShuffleNetV2(num_classes=num_classes, spp=spp)
