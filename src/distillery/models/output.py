"""The one output type every backbone returns, so methods never edit a model's forward to get a feature."""

from __future__ import annotations

from dataclasses import dataclass, field

from torch import Tensor


@dataclass
class ModelOutput:
    """Named outputs of one forward pass.

    feats: stage outputs, shallow to deep, each B x C_i x H_i x W_i (after the stage's activation).
    preact_feats: the same stages before their final ReLU where the architecture defines it (OFD, ReviewKD
        use them), else an empty list.
    pooled: B x C global-pooled last-stage feature (pre-bottleneck; D3still's ``pooled_feat``).
    embedding: B x D retrieval feature (after the bottleneck; D3still's ``retrieval_feat``); equals
        ``pooled`` for classification-only networks.
    logits: B x num_classes, or None for a head-less network.
    extras: model-specific tensors (e.g. SDD ``patch_logits`` B x C x N).
    """

    feats: list[Tensor]
    pooled: Tensor
    embedding: Tensor
    logits: Tensor | None = None
    preact_feats: list[Tensor] = field(default_factory=list)
    extras: dict[str, Tensor] = field(default_factory=dict)
