"""Retrieval MobileNetV3-Small of D3still (``AIR_Distiller/models/mobilenetv3.py``), as
``retrieval_mobilenetv3_small``. Parameter names ``model.*`` (torchvision ``features``) and ``fc.*`` as the official.
"""

from __future__ import annotations

import torch.nn as nn
from torch import Tensor
from torchvision import models as tvm

from distillery.models.heads import RetrievalHead
from distillery.models.output import ModelOutput
from distillery.models.registry import register_model

_STAGES = ((0, 2), (2, 4), (4, 9), (9, None))  # slices of ``model`` giving feats 16@/4, 24@/8, 48@/16, 576@/16


class RetrievalMobileNetV3Small(nn.Module):
    """torchvision ``mobilenet_v3_small().features`` with the depthwise conv of features[9] at stride
    ``last_stride``, global mean (576) -> RetrievalHead.

    ModelOutput: feats = [model[0:2], model[2:4], model[4:9], model[9:]] outputs (16, 24, 48, 576 channels),
    pooled 576, embedding = B x embedding_dim, logits, preact_feats = []. Backbone init: torchvision's.
    pretrained=True loads torchvision IMAGENET1K_V1 (what the official ``pretrained=True`` resolves to);
    the official ignores STUDENT_PRETRAIN_PATH.
    """

    def __init__(self, num_classes: int = 1000, pretrained: bool = False, last_stride: int = 1,
                 embedding_dim: int = 512):
        super().__init__()
        weights = tvm.MobileNet_V3_Small_Weights.IMAGENET1K_V1 if pretrained else None
        self.model = nn.Sequential(*tvm.mobilenet_v3_small(weights=weights).features.children())
        self.model[9].block[1][0].stride = (last_stride, last_stride)
        self.fc = RetrievalHead(576, num_classes, embedding_dim)

    def forward(self, x: Tensor) -> ModelOutput:
        feats = []
        for start, end in _STAGES:
            x = self.model[start:end](x)
            feats.append(x)
        pooled = x.mean((2, 3))
        logits, embedding = self.fc(pooled)
        return ModelOutput(feats=feats, pooled=pooled, embedding=embedding, logits=logits)


@register_model("retrieval_mobilenetv3_small")
def retrieval_mobilenetv3_small(num_classes: int = 1000, pretrained: bool = False, last_stride: int = 1,
                                embedding_dim: int = 512) -> RetrievalMobileNetV3Small:
    return RetrievalMobileNetV3Small(num_classes, pretrained, last_stride, embedding_dim)
