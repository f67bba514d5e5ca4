"""ImageNet MobileNetV1 of mdistiller (``models/imagenet/mobilenetv1.py``, spec 4.2), as ``mobilenetv1``.

Parameter names equal mdistiller's (``model.{i}.{j}``, ``fc``); PyTorch default init; no pretrained weights
exist (``pretrained=True`` raises ValueError).
"""

from __future__ import annotations

import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from distillery.models.output import ModelOutput
from distillery.models.registry import register_model
from distillery.models.spp import parse_scales
from distillery.models.zoo._common import classification_output

# (output channels, stride) of the 13 depthwise-separable units after the stem conv_bn(3, 32, /2)
_UNITS = [(64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2)] + [(512, 1)] * 5 + [(1024, 2), (1024, 1)]


def _conv_bn(c_in: int, c_out: int, stride: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True))


def _conv_dw(c_in: int, c_out: int, stride: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(c_in, c_in, 3, stride, 1, groups=c_in, bias=False),
        nn.BatchNorm2d(c_in),
        nn.ReLU(inplace=True),
        nn.Conv2d(c_in, c_out, 1, 1, 0, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
    )


class MobileNetV1(nn.Module):
    """``model`` = [conv_bn(3, 32, /2)] + 13 conv_dw units; global mean; fc(1024, C).

    ModelOutput (224x224): feats = ReLU of [f1 128@56, f2 256@28, f3 512@14, f4 1024@7] where f_i is the output
    of ``model[3]``, ``model[5]``, ``model[11]``, ``model[13]`` before its last ReLU (no stem entry);
    preact_feats = [f1, f2, f3, f4]; pooled = mean of ReLU(f4) (official AvgPool2d(7) = the mean at 224).
    spp: patch logits from ReLU(f4) (official SDD ``MobileNetV2_SDD``; "[1]" accepted here, the official raises).
    Quirk: the official fc is always 1000-way (num_classes is ignored there).
    """

    _STAGE_ENDS = (3, 5, 11, 13)

    def __init__(self, num_classes: int = 1000, spp=None):
        super().__init__()
        self.spp_scales = parse_scales(spp)
        units, c_in = [_conv_bn(3, 32, 2)], 32
        for c_out, stride in _UNITS:
            units.append(_conv_dw(c_in, c_out, stride))
            c_in = c_out
        self.model = nn.Sequential(*units)
        self.fc = nn.Linear(1024, num_classes)

    def get_bn_before_relu(self) -> list[nn.BatchNorm2d]:
        """OFD margins: the last BN of model[3], model[5], model[11], model[13]."""
        return [self.model[i][-2] for i in self._STAGE_ENDS]

    def forward(self, x: Tensor) -> ModelOutput:
        preact, start = [], 0
        for end in self._STAGE_ENDS:
            x = self.model[end][:-1](self.model[start:end](x))
            preact.append(x)
            x = F.relu(x)
            start = end + 1
        feats = [F.relu(f) for f in preact]
        return classification_output(feats, feats[-1].mean((2, 3)), self.fc, preact, feats[-1], self.spp_scales)


@register_model("mobilenetv1")
def mobilenetv1(num_classes: int = 1000, pretrained: bool = False, spp=None) -> MobileNetV1:
    if pretrained:
        raise ValueError("mobilenetv1 has no pretrained weights (mdistiller trains it from scratch)")
    return MobileNetV1(num_classes=num_classes, spp=spp)
