"""ImageNet ResNet18/34/50/101 of mdistiller (``models/imagenet/resnet.py``, spec 4.2): ``resnet18`` ... ``resnet101``.

torchvision layout and parameter names (torchvision checkpoints load strictly), but every block applies ReLU to
its *input* and returns the pre-activation residual sum, so the stage outputs are pre-activations.
"""

from __future__ import annotations

import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor
from torchvision import models as tvm

from distillery.models.output import ModelOutput
from distillery.models.registry import register_model
from distillery.models.spp import parse_scales
from distillery.models.zoo._common import classification_output, init_convs_normal, load_pretrained


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, c_in: int, planes: int, stride: int = 1, downsample: nn.Module | None = None):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, planes, kernel_size=3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, kernel_size=3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample

    def forward(self, x: Tensor) -> Tensor:
        x = F.relu(x)
        out = self.bn2(self.conv2(self.relu(self.bn1(self.conv1(x)))))
        return out + (x if self.downsample is None else self.downsample(x))


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, c_in: int, planes: int, stride: int = 1, downsample: nn.Module | None = None):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, planes, kernel_size=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, kernel_size=3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * 4, kernel_size=1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * 4)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: Tensor) -> Tensor:
        x = F.relu(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return out + (x if self.downsample is None else self.downsample(x))


class ImageNetResNet(nn.Module):
    """conv7x7/2-BN-ReLU, max-pool 3/2/1, four stages, global mean of ReLU(layer4), fc.

    ModelOutput (224x224): feats = ReLU of [stem 64@112, f1@56, f2@28, f3@14, f4@7]; preact_feats = [stem, f1,
    f2, f3, f4] where stem is post-ReLU (official quirk: aliased by an in-place ReLU) and f1..f4 are the raw
    residual sums; pooled = mean of ReLU(f4) (official AvgPool2d(7) = the mean at 224x224).
    spp: patch logits from ReLU(f4) (the official SDD ImageNet models hard-code 1000 classes, here num_classes;
    their SPP raises for "[1]", accepted here).
    Init: conv N(0, sqrt(2/(k²·C_out))), BN 1/0, fc PyTorch default.
    ``classifier_prefix``: ``fc`` is not part of the descriptor (embedding = pooled), so a self-supervised
    backbone checkpoint without it can be imported as a retrieval teacher (engine/stage_common.import_teacher).
    """

    classifier_prefix = "fc."

    def __init__(self, block: type, layers: tuple[int, ...], num_classes: int = 1000, spp=None):
        super().__init__()
        self.spp_scales = parse_scales(spp)
        self.inplanes = 64
        self.conv1 = nn.Conv2d(3, 64, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.layer1 = self._make_layer(block, 64, layers[0], 1)
        self.layer2 = self._make_layer(block, 128, layers[1], 2)
        self.layer3 = self._make_layer(block, 256, layers[2], 2)
        self.layer4 = self._make_layer(block, 512, layers[3], 2)
        self.fc = nn.Linear(512 * block.expansion, num_classes)
        init_convs_normal(self)

    def _make_layer(self, block: type, planes: int, n: int, stride: int) -> nn.Sequential:
        downsample = None
        if stride != 1 or self.inplanes != planes * block.expansion:
            downsample = nn.Sequential(
                nn.Conv2d(self.inplanes, planes * block.expansion, kernel_size=1, stride=stride, bias=False),
                nn.BatchNorm2d(planes * block.expansion),
            )
        layers = [block(self.inplanes, planes, stride, downsample)]
        self.inplanes = planes * block.expansion
        layers += [block(self.inplanes, planes) for _ in range(1, n)]
        return nn.Sequential(*layers)

    def get_bn_before_relu(self) -> list[nn.BatchNorm2d]:
        """OFD margins: last BN (bn2 / bn3) of layer2, layer3, layer4 (layer1 is left out, as the official)."""
        name = "bn3" if isinstance(self.layer1[0], Bottleneck) else "bn2"
        return [getattr(layer[-1], name) for layer in (self.layer2, self.layer3, self.layer4)]

    def forward(self, x: Tensor) -> ModelOutput:
        stem = self.relu(self.bn1(self.conv1(x)))
        x = self.maxpool(stem)
        preact = [stem]
        for layer in (self.layer1, self.layer2, self.layer3, self.layer4):
            x = layer(x)
            preact.append(x)
        feats = [F.relu(f) for f in preact]
        return classification_output(feats, feats[-1].mean((2, 3)), self.fc, preact, feats[-1], self.spp_scales)


_CONFIGS = {
    "resnet18": (BasicBlock, (2, 2, 2, 2), tvm.ResNet18_Weights),
    "resnet34": (BasicBlock, (3, 4, 6, 3), tvm.ResNet34_Weights),
    "resnet50": (Bottleneck, (3, 4, 6, 3), tvm.ResNet50_Weights),
    "resnet101": (Bottleneck, (3, 4, 23, 3), tvm.ResNet101_Weights),
}


def _factory(block: type, layers: tuple[int, ...], weights_enum):
    def build(num_classes: int = 1000, pretrained: bool = False, spp=None) -> ImageNetResNet:
        """pretrained=True loads torchvision's IMAGENET1K_V1 weights (the original release that mdistiller loads by
        its old URL; torchvision re-published it under a new file name); with num_classes != 1000 the fc keeps its
        init."""
        model = ImageNetResNet(block, layers, num_classes=num_classes, spp=spp)
        if pretrained:
            state = weights_enum.IMAGENET1K_V1.get_state_dict(progress=True)
            load_pretrained(model, state, skip_prefix=None if num_classes == 1000 else "fc.")
        return model

    return build


for _name, (_block, _layers, _weights) in _CONFIGS.items():
    register_model(_name)(_factory(_block, _layers, _weights))
