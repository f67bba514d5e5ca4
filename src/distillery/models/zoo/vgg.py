"""CIFAR VGG with batch norm: vgg8, vgg11, vgg13, vgg16, vgg19 (mdistiller ``models/cifar/vgg.py``, ``vgg*_bn``).

Parameter names equal mdistiller's: ``block{i}.{j}`` with j counting conv, BN and ReLU modules, so the
indices of every block's last ReLU (removed) shift nothing.
"""

from __future__ import annotations

import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from distillery.models.output import ModelOutput
from distillery.models.registry import register_model
from distillery.models.spp import parse_scales
from distillery.models.zoo._common import classification_output, init_convs_normal

_CFG = {
    "vgg8": [[64], [128], [256], [512], [512]],
    "vgg11": [[64], [128], [256, 256], [512, 512], [512, 512]],
    "vgg13": [[64, 64], [128, 128], [256, 256], [512, 512], [512, 512]],
    "vgg16": [[64, 64], [128, 128], [256, 256, 256], [512, 512, 512], [512, 512, 512]],
    "vgg19": [[64, 64], [128, 128], [256] * 4, [512] * 4, [512] * 4],
}


def _make_block(widths: list[int], c_in: int) -> nn.Sequential:
    layers: list[nn.Module] = []
    for w in widths:
        layers += [nn.Conv2d(c_in, w, kernel_size=3, padding=1), nn.BatchNorm2d(w), nn.ReLU(inplace=True)]
        c_in = w
    return nn.Sequential(*layers[:-1])  # the block's last ReLU is applied in forward


class VGG(nn.Module):
    """Five blocks of conv3x3(bias)+BN+ReLU, 2x2 max-pools after blocks 0-2, global mean, Linear(512, C).

    ModelOutput (32x32): feats = [64@32, 128@16, 256@8, 512@4, 512@4] (post-ReLU), preact_feats = [f0, last BN
    output of blocks 1-4], pooled 512. spp: patch logits from ReLU(block4).
    Quirk (reproduced): the max-pool between blocks 3 and 4 is applied only when the input height is 64.
    """

    def __init__(self, cfg: list[list[int]], num_classes: int = 100, spp=None):
        super().__init__()
        self.spp_scales = parse_scales(spp)
        self.block0 = _make_block(cfg[0], 3)
        self.block1 = _make_block(cfg[1], cfg[0][-1])
        self.block2 = _make_block(cfg[2], cfg[1][-1])
        self.block3 = _make_block(cfg[3], cfg[2][-1])
        self.block4 = _make_block(cfg[4], cfg[3][-1])
        self.pool0 = nn.MaxPool2d(kernel_size=2, stride=2)
        self.pool1 = nn.MaxPool2d(kernel_size=2, stride=2)
        self.pool2 = nn.MaxPool2d(kernel_size=2, stride=2)
        self.pool3 = nn.MaxPool2d(kernel_size=2, stride=2)
        self.classifier = nn.Linear(512, num_classes)
        init_convs_normal(self)
        nn.init.normal_(self.classifier.weight, 0.0, 0.01)
        nn.init.zeros_(self.classifier.bias)

    def get_bn_before_relu(self) -> list[nn.BatchNorm2d]:
        """OFD margins: the last BN of block1..4."""
        return [self.block1[-1], self.block2[-1], self.block3[-1], self.block4[-1]]

    def forward(self, x: Tensor) -> ModelOutput:
        height = x.shape[2]
        x = F.relu(self.block0(x))
        feats, preact = [x], [x]
        for block, pool in ((self.block1, self.pool0), (self.block2, self.pool1), (self.block3, self.pool2)):
            pre = block(pool(x))
            x = F.relu(pre)
            feats.append(x)
            preact.append(pre)
        if height == 64:
            x = self.pool3(x)
        pre = self.block4(x)
        x = F.relu(pre)
        feats.append(x)
        preact.append(pre)
        return classification_output(feats, x.mean((2, 3)), self.classifier, preact, x, self.spp_scales)


def _factory(cfg: list[list[int]]):
    def build(num_classes: int = 100, spp=None) -> VGG:
        return VGG(cfg, num_classes=num_classes, spp=spp)

    return build


for _name, _cfg in _CFG.items():
    register_model(_name)(_factory(_cfg))
