"""CIFAR "ResNetV2" family: ResNet18/34/50 with a 3x3 stride-1 stem and no max-pool
(mdistiller ``models/cifar/resnetv2.py``; ResNet50 is a CIFAR teacher, ResNet18 the Tiny-ImageNet DOT teacher).

Registered as ``resnet18_cifar``, ``resnet34_cifar``, ``resnet50_cifar`` (mdistiller calls them ``ResNet18`` /
``ResNet50``, which would collide with the ImageNet names). Parameter names equal mdistiller's.
"""

from __future__ import annotations

import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from distillery.models.output import ModelOutput
from distillery.models.registry import register_model
from distillery.models.spp import parse_scales
from distillery.models.zoo._common import classification_output, init_convs_kaiming, run_stage


def _shortcut(c_in: int, c_out: int, stride: int) -> nn.Sequential:
    if stride == 1 and c_in == c_out:
        return nn.Sequential()
    return nn.Sequential(nn.Conv2d(c_in, c_out, kernel_size=1, stride=stride, bias=False), nn.BatchNorm2d(c_out))


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, c_in: int, planes: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, planes, kernel_size=3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, kernel_size=3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut = _shortcut(c_in, planes, stride)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        out = self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x)))))
        pre = out + self.shortcut(x)
        return F.relu(pre), pre


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, c_in: int, planes: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, planes, kernel_size=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, kernel_size=3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, 4 * planes, kernel_size=1, bias=False)
        self.bn3 = nn.BatchNorm2d(4 * planes)
        self.shortcut = _shortcut(c_in, 4 * planes, stride)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        out = F.relu(self.bn1(self.conv1(x)))
        out = F.relu(self.bn2(self.conv2(out)))
        pre = self.bn3(self.conv3(out)) + self.shortcut(x)
        return F.relu(pre), pre


class CifarResNetV2(nn.Module):
    """Stem conv3x3(3->64, stride 1)+BN+ReLU, four stages (64, 128, 256, 512 planes; strides 1, 2, 2, 2).

    ModelOutput (ResNet50 at 32x32): feats = [stem 64@32, 256@32, 512@16, 1024@8, 2048@4] (post-ReLU),
    preact_feats = [stem, pre-ReLU sums of the last block of each stage], pooled = global mean of layer4
    (B x 512·expansion). spp: SDD scales; patch logits from the layer4 map.
    """

    def __init__(self, block: type, num_blocks: tuple[int, ...], num_classes: int = 100, spp=None):
        super().__init__()
        self.spp_scales = parse_scales(spp)
        self.in_planes = 64
        self.conv1 = nn.Conv2d(3, 64, kernel_size=3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.layer1 = self._make_layer(block, 64, num_blocks[0], 1)
        self.layer2 = self._make_layer(block, 128, num_blocks[1], 2)
        self.layer3 = self._make_layer(block, 256, num_blocks[2], 2)
        self.layer4 = self._make_layer(block, 512, num_blocks[3], 2)
        self.linear = nn.Linear(512 * block.expansion, num_classes)
        init_convs_kaiming(self)

    def _make_layer(self, block: type, planes: int, n: int, stride: int) -> nn.Sequential:
        layers = []
        for s in [stride] + [1] * (n - 1):
            layers.append(block(self.in_planes, planes, s))
            self.in_planes = planes * block.expansion
        return nn.Sequential(*layers)

    def get_bn_before_relu(self) -> list[nn.BatchNorm2d]:
        """OFD margins: last BN (bn2 / bn3) of layer1..4."""
        name = "bn3" if isinstance(self.layer1[0], Bottleneck) else "bn2"
        return [getattr(layer[-1], name) for layer in (self.layer1, self.layer2, self.layer3, self.layer4)]

    def forward(self, x: Tensor) -> ModelOutput:
        x = F.relu(self.bn1(self.conv1(x)))
        feats, preact = [x], [x]
        for layer in (self.layer1, self.layer2, self.layer3, self.layer4):
            x, pre = run_stage(layer, x)
            feats.append(x)
            preact.append(pre)
        return classification_output(feats, x.mean((2, 3)), self.linear, preact, x, self.spp_scales)


_CONFIGS = {
    "resnet18_cifar": (BasicBlock, (2, 2, 2, 2)),
    "resnet34_cifar": (BasicBlock, (3, 4, 6, 3)),
    "resnet50_cifar": (Bottleneck, (3, 4, 6, 3)),
}


def _factory(block: type, num_blocks: tuple[int, ...]):
    def build(num_classes: int = 100, spp=None) -> CifarResNetV2:
        return CifarResNetV2(block, num_blocks, num_classes=num_classes, spp=spp)

    return build


for _name, (_block, _blocks) in _CONFIGS.items():
    register_model(_name)(_factory(_block, _blocks))
