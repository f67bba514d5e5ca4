"""UGD (Neural Networks 2025): global embedding alignment plus local alignment at two granularities, where
only the regions that the teacher's own head classifies correctly are distilled."""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from distillery.losses.base import Distiller
from distillery.losses.functional import ugd_loss
from distillery.losses.registry import register_method


def grid_features(feat: Tensor, size: int) -> Tensor:
    """B x C x H x W -> (B size^2) x C local features: adaptive average pooling to size x size, rows ordered
    sample-major then row-major over the grid (D3still ``DownSampling_Pooling``)."""
    pooled = F.adaptive_avg_pool2d(feat, (size, size))
    return pooled.flatten(2).transpose(1, 2).reshape(-1, feat.shape[1])


def _projector(in_dim: int, out_dim: int) -> nn.Sequential:
    """BN1d(in) -> Linear(in, out, no bias) -> BN1d(out), no ReLU; Linear Kaiming-normal (fan_out), BN 1 / 0."""
    projector = nn.Sequential(nn.BatchNorm1d(in_dim), nn.Linear(in_dim, out_dim, bias=False), nn.BatchNorm1d(out_dim))
    nn.init.kaiming_normal_(projector[1].weight, a=0, mode="fan_out")
    return projector


@register_method("ugd")
class UGD(Distiller):
    """kd_weight * ugd_loss(...): alpha * global term + beta * (local term at p + local term at p // 2).

    Student side: stage ``layer`` (1-based, D3still's DISTILLATION_LAYER) pooled to p x p and p//2 x p//2
    local features, each through its own projector to the teacher's embedding dim (built in ``setup`` from
    the probed shapes). Teacher side: its last stage map (detached), pooled likewise and passed through the
    teacher's own retrieval head (``teacher.fc``, the ClassBlock, frozen and in eval mode; bound by the
    trainer through ``bind_teacher``), giving the local embeddings and logits that select the distilled rows.
    ``pool_size`` p defaults to the height of the student's stage-``layer`` map, which equals the official
    STUDENT_SIZE_TRAIN[0] // 16 for its students (stage 3 has stride 16: 128 -> 8, 64 -> 4, 160x80 -> 10;
    as official, a 10 x 5 map is then pooled to 10 x 10 by duplicating columns).
    Defaults: the R101 -> R18 configs (alpha 2, beta 2, layer 3, kd_weight 1); the official recipe uses a
    KD batch of 96 for UGD (256 for the other methods).
    """

    teacher_outputs = ("embedding", "feats")
    needs_equal_embedding_dims = True

    def __init__(self, kd_weight: float = 1.0, alpha: float = 2.0, beta: float = 2.0, layer: int = 3,
                 pool_size: int | None = None):
        super().__init__(kd_weight)
        self.alpha, self.beta, self.layer = float(alpha), float(beta), int(layer)
        self.pool_size = None if pool_size is None else int(pool_size)
        self.sizes: tuple[int, int] | None = None
        self.projectors: nn.ModuleList | None = None
        self._teacher_head = None  # a plain attribute: the teacher's head is neither optimised nor checkpointed

    def setup(self, student_shapes: dict, teacher_shapes: dict) -> None:
        super().setup(student_shapes, teacher_shapes)
        stages = student_shapes["feats"]
        if not 1 <= self.layer <= len(stages):
            raise ValueError(f"ugd layer must be in 1..{len(stages)} (the student's stages), got {self.layer}")
        _, channels, height, _ = stages[self.layer - 1]
        size = self.pool_size or height
        if size < 2:
            raise ValueError(f"ugd needs a pooling grid of at least 2 x 2 (got {size}); pick a shallower layer "
                             f"or set pool_size")
        self.sizes = (size, size // 2)
        dim = teacher_shapes["embedding"][-1]
        self.projectors = nn.ModuleList([_projector(channels, dim) for _ in self.sizes])

    def bind_teacher(self, teacher: nn.Module) -> None:
        head = getattr(teacher, "fc", None)
        if not isinstance(head, nn.Module):
            raise ValueError("ugd needs a teacher with a retrieval head `fc` (ClassBlock: pooled -> embedding, "
                             "logits)")
        object.__setattr__(self, "_teacher_head", head)  # bypass nn.Module registration

    def forward(self, student, teacher, target):
        if self.projectors is None or self._teacher_head is None:
            raise RuntimeError("ugd: call setup(...) and bind_teacher(teacher) before the first forward")
        feat_s, feat_t = student.feats[self.layer - 1], teacher.feats[-1].detach()
        local_s, local_t, logits_t = [], [], []
        for size, projector in zip(self.sizes, self.projectors):
            local_s.append(projector(grid_features(feat_s, size)))
            with torch.no_grad():
                logits, embedding = self._teacher_head(grid_features(feat_t, size))
            if logits is None:
                raise ValueError("ugd needs teacher logits: build the teacher with num_classes > 0")
            local_t.append(embedding)
            logits_t.append(logits)
        loss = ugd_loss(student.embedding, teacher.embedding, local_s, local_t, logits_t, target,
                        alpha=self.alpha, beta=self.beta)
        return {"kd": self.kd_weight * loss}
