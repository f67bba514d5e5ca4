"""Retrieval ResNets of D3still (``AIR_Distiller/models/resnet.py``, d3still.md section 4):
``retrieval_resnet18``, ``retrieval_resnet34``, ``retrieval_resnet50``, ``retrieval_resnet101``.

torchvision blocks and parameter names for the backbone, head ``fc`` = ``RetrievalHead`` (official ``ClassBlock``
names ``fc.add_block.*``, ``fc.classifier.*``), so D3still's released checkpoints load strictly.
"""

from __future__ import annotations

import torch.nn as nn
from torch import Tensor
from torchvision import models as tvm
from torchvision.models.resnet import BasicBlock, Bottleneck

from distillery.models.heads import L2LinearHead, RetrievalHead
from distillery.models.output import ModelOutput
from distillery.models.pooling import check_pooling, global_pool
from distillery.models.registry import register_model
from distillery.models.zoo._common import load_pretrained


class RetrievalResNet(nn.Module):
    """conv7x7/2-BN-ReLU, **max-pool 2/2/0** (official quirk; torchvision uses 3/2/1), layer1-4 with layer4
    stride ``last_stride``, global mean -> pooled, RetrievalHead -> (logits, embedding).

    Options for whiten_mtd's student (whiten_mtd.md 4.1): ``pooling="gem"`` (GeM with fixed ``gem_p``) instead of
    the mean, ``head="l2_linear"`` (L2 then Linear(512·expansion, embedding_dim), logits None) instead of the
    RetrievalHead. (The official whiten_mtd student is a torchvision ResNet, whose max-pool is 3/2/1.)

    ModelOutput: feats = [layer1, layer2, layer3, layer4] (post-ReLU block outputs), pooled = B x 512·expansion,
    embedding = B x embedding_dim (post-BN bottleneck, D3still's ``retrieval_feat``), logits, preact_feats = [].
    Backbone init: PyTorch defaults (the official never re-initialises it); head init: see RetrievalHead.
    """

    def __init__(self, block: type, layers: tuple[int, ...], num_classes: int, last_stride: int = 1,
                 embedding_dim: int = 512, pooling: str = "avg", gem_p: float = 3.0, head: str = "retrieval"):
        super().__init__()
        if head not in ("retrieval", "l2_linear"):
            raise ValueError(f"retrieval_resnet head must be 'retrieval' or 'l2_linear', got {head!r}")
        check_pooling(pooling, gem_p)
        self.pooling, self.gem_p = pooling, float(gem_p)
        self.inplanes = 64
        self.conv1 = nn.Conv2d(3, 64, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=2, stride=2, padding=0)
        self.layer1 = self._make_layer(block, 64, layers[0], 1)
        self.layer2 = self._make_layer(block, 128, layers[1], 2)
        self.layer3 = self._make_layer(block, 256, layers[2], 2)
        self.layer4 = self._make_layer(block, 512, layers[3], last_stride)
        self.fc = (RetrievalHead(512 * block.expansion, num_classes, embedding_dim) if head == "retrieval"
                   else L2LinearHead(512 * block.expansion, embedding_dim))

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

    def forward(self, x: Tensor) -> ModelOutput:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        feats = []
        for layer in (self.layer1, self.layer2, self.layer3, self.layer4):
            x = layer(x)
            feats.append(x)
        pooled = global_pool(x, self.pooling, self.gem_p)
        logits, embedding = self.fc(pooled)
        return ModelOutput(feats=feats, pooled=pooled, embedding=embedding, logits=logits)


_CONFIGS = {
    "retrieval_resnet18": (BasicBlock, (2, 2, 2, 2), tvm.ResNet18_Weights),
    "retrieval_resnet34": (BasicBlock, (3, 4, 6, 3), tvm.ResNet34_Weights),
    "retrieval_resnet50": (Bottleneck, (3, 4, 6, 3), tvm.ResNet50_Weights),
    "retrieval_resnet101": (Bottleneck, (3, 4, 23, 3), tvm.ResNet101_Weights),
}


def _factory(block: type, layers: tuple[int, ...], weights_enum):
    def build(num_classes: int = 1000, pretrained: bool = False, last_stride: int = 1,
              embedding_dim: int = 512, pooling: str = "avg", gem_p: float = 3.0,
              head: str = "retrieval") -> RetrievalResNet:
        """pretrained=True copies every torchvision IMAGENET1K_V1 tensor except ``fc.*`` (BN running statistics
        included), as the official loader does with the original release URLs (IMAGENET1K_V1 is that release,
        re-published by torchvision under a new file name)."""
        model = RetrievalResNet(block, layers, num_classes, last_stride, embedding_dim, pooling, gem_p, head)
        if pretrained:
            load_pretrained(model, weights_enum.IMAGENET1K_V1.get_state_dict(progress=True), skip_prefix="fc.")
        return model

    return build


for _name, (_block, _layers, _weights) in _CONFIGS.items():
    register_model(_name)(_factory(_block, _layers, _weights))
