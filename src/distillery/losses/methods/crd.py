"""CRD (Tian et al.): contrastive representation distillation with memory banks of student and teacher
embeddings of every training image (mdistiller)."""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn as nn
from torch import Tensor

from distillery.losses.base import Distiller
from distillery.losses.math.crd import crd_contrast_loss, crd_memory_update, crd_normalizer, crd_scores
from distillery.losses.registry import register_method


class Embed(nn.Module):
    """Linear(D_in, d) (default init) then division by the L2 norm (no eps), as the official ``Embed``."""

    def __init__(self, dim_in: int, dim_out: int):
        super().__init__()
        self.linear = nn.Linear(dim_in, dim_out)

    def forward(self, x: Tensor) -> Tensor:
        x = self.linear(x.reshape(x.shape[0], -1))
        return x / x.pow(2).sum(1, keepdim=True).pow(0.5)


@register_method("crd")
class CRD(Distiller):
    """kd_weight * (L_s + L_t) on the pooled features through the learnable ``embed_s`` / ``embed_t``.

    ``bind_data`` sizes the two banks (N x feat_dim, uniform in [-a, a], a = 1 / sqrt(feat_dim / 3), seeded)
    and the per-class negative pools. Each forward draws ``nce_k`` negatives per sample from the *other*
    classes (without replacement when the pool is large enough, as the official ``exact`` mode; positive =
    the sample itself), seeded by (seed, epoch); the normalisation constants Z are fixed on the first batch
    and saved with the banks (buffers). No KD term is added (CE + CRD only). mdistiller: CE 1, kd_weight 0.8,
    feat_dim 128, nce_k 16384, nce_t 0.07, nce_momentum 0.5.
    """

    teacher_outputs = ("pooled",)
    needs_sample_index = True

    def __init__(self, kd_weight: float = 0.8, feat_dim: int = 128, nce_k: int = 16384, nce_t: float = 0.07,
                 nce_momentum: float = 0.5, eps: float = 1e-7, ce_weight: float = 1.0):
        super().__init__(kd_weight, ce_weight)
        self.feat_dim, self.nce_k, self.nce_t = int(feat_dim), int(nce_k), float(nce_t)
        self.nce_momentum, self.eps = float(nce_momentum), float(eps)
        self.embed_s: Embed | None = None
        self.embed_t: Embed | None = None
        self._negatives: dict[int, np.ndarray] = {}
        self._labels: np.ndarray | None = None
        self._seed = 0
        self._rng = np.random.default_rng(0)

    def setup(self, student_shapes: dict, teacher_shapes: dict) -> None:
        self.embed_s = Embed(student_shapes["pooled"][-1], self.feat_dim)
        self.embed_t = Embed(teacher_shapes["pooled"][-1], self.feat_dim)

    def bind_data(self, labels: np.ndarray, seed: int = 0) -> None:
        labels = np.asarray(labels)
        n, bound = len(labels), 1.0 / math.sqrt(self.feat_dim / 3)
        g = torch.Generator().manual_seed(int(seed))
        for name in ("memory_s", "memory_t"):
            self.register_buffer(name, torch.rand(n, self.feat_dim, generator=g).mul_(2 * bound).add_(-bound))
        self.register_buffer("z", torch.full((2,), -1.0))  # (Z_s, Z_t); < 0 = not set yet
        self._labels, self._seed = labels, int(seed)
        positions = np.arange(n)
        self._negatives = {int(c): positions[labels != c] for c in np.unique(labels)}
        self.set_epoch(self.epoch or 1)

    def set_epoch(self, epoch: int) -> None:
        super().set_epoch(epoch)
        self._rng = np.random.default_rng([self._seed, int(epoch), 31337])

    def contrast_indices(self, index: Tensor) -> Tensor:
        """B x (K+1) positions: column 0 the sample itself, then K negatives of other classes."""
        rows = []
        for i in index.tolist():
            pool = self._negatives[int(self._labels[i])]
            rows.append(np.concatenate([[i], self._rng.choice(pool, self.nce_k, replace=self.nce_k > len(pool))]))
        return torch.as_tensor(np.stack(rows), dtype=torch.long, device=index.device)

    def forward(self, student, teacher, target, index: Tensor | None = None):
        if self.embed_s is None or self._labels is None:
            raise RuntimeError("crd: call setup(...) and bind_data(labels) before the first forward")
        if index is None:
            raise ValueError("crd needs the batch's sample positions: forward(..., index=positions)")
        contrast_idx = self.contrast_indices(index)
        v_s, v_t = self.embed_s(student.pooled), self.embed_t(teacher.pooled)
        n = self.memory_s.shape[0]
        scores_s = crd_scores(self.memory_t, v_s, contrast_idx, self.nce_t)  # student vs teacher bank
        scores_t = crd_scores(self.memory_s, v_t, contrast_idx, self.nce_t)  # teacher vs student bank
        if self.z[0] < 0:
            self.z[0] = crd_normalizer(scores_s, n)
        if self.z[1] < 0:
            self.z[1] = crd_normalizer(scores_t, n)
        loss = crd_contrast_loss(scores_s / self.z[0], n, self.eps) + crd_contrast_loss(scores_t / self.z[1], n, self.eps)
        self.memory_s.copy_(crd_memory_update(self.memory_s, v_s, index, self.nce_momentum))
        self.memory_t.copy_(crd_memory_update(self.memory_t, v_t, index, self.nce_momentum))
        return {"kd": self.kd_weight * loss}
