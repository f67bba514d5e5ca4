"""Small VGG-style convnets for the embedded (Fashion-MNIST) benchmark: fast on a 2-core CPU.

Three stages of (conv3x3-BN-ReLU) x depth, each followed by 2x2 max-pooling except the last; global pooling
(``pooling="avg"``, or ``"gem"`` with exponent ``gem_p``) gives ``pooled``. ``feats`` = the three stage outputs
(post-ReLU), ``preact_feats`` = the same before the stage's last ReLU (output of its last BN);
``get_bn_before_relu()`` = the last BN of stages 2 and 3 (aligned with ``preact_feats[1:]``, as the CIFAR nets'
list is with theirs). Heads: ``retrieval`` = the D3still ClassBlock (``fc``: BN-ReLU-Linear-BN embedding and a
bias-free classifier), ``linear`` = a plain Linear classifier on ``pooled`` (classification nets; the
embedding is ``pooled`` and ``spp`` adds SDD patch logits from the last map), ``l2_linear`` = whiten_mtd's
student head (L2 then Linear; no logits). Input: B x C x H x W, H, W >= 8.
"""

from __future__ import annotations

import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from distillery.models.heads import L2LinearHead, RetrievalHead
from distillery.models.output import ModelOutput
from distillery.models.pooling import check_pooling, global_pool
from distillery.models.registry import register_model
from distillery.models.spp import parse_scales
from distillery.models.zoo._common import classification_output


def _stage(c_in: int, c_out: int, depth: int) -> nn.Sequential:
    layers = []
    for i in range(depth):
        layers += [nn.Conv2d(c_in if i == 0 else c_out, c_out, 3, padding=1, bias=False),
                   nn.BatchNorm2d(c_out), nn.ReLU(inplace=True)]
    return nn.Sequential(*layers)


HEADS = ("retrieval", "linear", "l2_linear")


class ConvNet(nn.Module):
    def __init__(self, widths=(16, 32, 64), depth: int = 1, in_channels: int = 1, embedding_dim: int = 64,
                 num_classes: int = 10, pretrained: bool = False, head: str = "retrieval", spp=None,
                 pooling: str = "avg", gem_p: float = 3.0):
        super().__init__()
        if pretrained:
            raise ValueError("the embedded convnets have no pretrained weights; set pretrained: false")
        if head not in HEADS:
            raise ValueError(f"convnet head must be one of {', '.join(HEADS)}, got {head!r}")
        check_pooling(pooling, gem_p)
        self.pooling, self.gem_p = pooling, float(gem_p)
        self.spp_scales = parse_scales(spp)
        if self.spp_scales is not None and head != "linear":
            raise ValueError("SDD patch logits (spp) need the plain classifier: set head: linear")
        self.stages = nn.ModuleList()
        c_in = in_channels
        for width in widths:
            self.stages.append(_stage(c_in, width, depth))
            c_in = width
        self.pool = nn.MaxPool2d(2)
        self.head_kind = head
        if head == "retrieval":
            self.fc = RetrievalHead(c_in, num_classes, embedding_dim)
        elif head == "l2_linear":
            self.fc = L2LinearHead(c_in, embedding_dim)
        else:
            self.fc = nn.Linear(c_in, num_classes)
        for m in self.stages.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def get_bn_before_relu(self) -> list[nn.BatchNorm2d]:
        """OFD margins: the last BN of stages 2 and 3 (the stages of ``preact_feats[1:]``)."""
        return [stage[-2] for stage in self.stages[1:]]

    def forward(self, x: Tensor) -> ModelOutput:
        feats, preact = [], []
        for i, stage in enumerate(self.stages):
            x = x if i == 0 else self.pool(x)
            for layer in stage[:-1]:
                x = layer(x)
            preact.append(x)
            x = F.relu(x)  # the stage's last ReLU, out of place so that the pre-activation survives
            feats.append(x)
        pooled = global_pool(x, self.pooling, self.gem_p)
        if self.head_kind == "linear":
            return classification_output(feats, pooled, self.fc, preact, x, self.spp_scales)
        logits, embedding = self.fc(pooled)
        return ModelOutput(feats=feats, pooled=pooled, embedding=embedding, logits=logits, preact_feats=preact)


@register_model("convnet_s")
def convnet_s(**kwargs) -> ConvNet:
    """Student: widths 16-32-64, one conv per stage (~28k parameters with the 64-d retrieval head); ``widths`` /
    ``depth`` (model_options) override the preset."""
    return ConvNet(**{"widths": (16, 32, 64), "depth": 1, **kwargs})


@register_model("convnet_m")
def convnet_m(**kwargs) -> ConvNet:
    """Teacher: widths 16-32-64, two convs per stage (~77k parameters with the 64-d retrieval head); ``widths`` /
    ``depth`` (model_options) override the preset."""
    return ConvNet(**{"widths": (16, 32, 64), "depth": 2, **kwargs})
