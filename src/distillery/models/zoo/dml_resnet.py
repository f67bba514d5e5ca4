"""The deep-metric-learning ResNet50 of the S2SD code base (``architectures/resnet50.py``, s2sd_dml.md section 4):
``dml_resnet50``; ``frozen_bn=True, normalize=True`` is its ``resnet50_frozen_normalize``.
"""

from __future__ import annotations

import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor
from torchvision import models as tvm

from distillery.models.output import ModelOutput
from distillery.models.registry import register_model
from distillery.models.zoo._common import load_pretrained


class DMLResNet50(nn.Module):
    """torchvision ResNet50 trunk (conv-BN-ReLU, max-pool 3/2/1, layer1-4), global average pool, a fresh
    ``last_linear`` Linear(2048, embedding_dim) (PyTorch default init), L2-normalised output if ``normalize``.

    ``frozen_bn``: every BatchNorm2d stays in eval mode whatever ``train()``/``eval()`` is called (running
    statistics keep their initial, ImageNet, values; the affine weights still train), as the official arch
    that replaces each BN's ``train`` by a no-op.

    ModelOutput: feats = [layer1, layer2, layer3, layer4] (post-ReLU; the last is S2SD's ``features``),
    pooled = global average of layer4 (S2SD's ``avg_features``, B x 2048), embedding = (normalised)
    last_linear(pooled), logits = None (no classifier: train it with a DML task loss).
    """

    def __init__(self, embedding_dim: int = 128, frozen_bn: bool = True, normalize: bool = True):
        super().__init__()
        trunk = tvm.resnet50(weights=None)
        self.conv1, self.bn1, self.relu, self.maxpool = trunk.conv1, trunk.bn1, trunk.relu, trunk.maxpool
        self.layer1, self.layer2, self.layer3, self.layer4 = trunk.layer1, trunk.layer2, trunk.layer3, trunk.layer4
        self.last_linear = nn.Linear(trunk.fc.in_features, embedding_dim)
        self.frozen_bn, self.normalize = bool(frozen_bn), bool(normalize)
        self.train()

    def train(self, mode: bool = True) -> "DMLResNet50":
        super().train(mode)
        if self.frozen_bn:
            for m in self.modules():
                if isinstance(m, nn.BatchNorm2d):
                    m.training = False
        return self

    def forward(self, x: Tensor) -> ModelOutput:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        feats = []
        for layer in (self.layer1, self.layer2, self.layer3, self.layer4):
            x = layer(x)
            feats.append(x)
        pooled = x.mean(dim=(2, 3))
        embedding = self.last_linear(pooled)
        if self.normalize:
            embedding = F.normalize(embedding, dim=-1)
        return ModelOutput(feats=feats, pooled=pooled, embedding=embedding, logits=None)


@register_model("dml_resnet50")
def dml_resnet50(embedding_dim: int = 128, pretrained: bool = False, frozen_bn: bool = True,
                 normalize: bool = True) -> DMLResNet50:
    """pretrained=True loads torchvision's IMAGENET1K_V1 ResNet50 weights (the release Cadene's
    ``pretrainedmodels`` resnet50 re-distributes, which the official code loads) except ``fc``."""
    model = DMLResNet50(embedding_dim, frozen_bn, normalize)
    if pretrained:
        state = dict(tvm.ResNet50_Weights.IMAGENET1K_V1.get_state_dict(progress=True))
        state.update({f"last_linear.{k}": v for k, v in model.last_linear.state_dict().items()})  # keeps its init
        load_pretrained(model, state, skip_prefix="fc.")
    return model
