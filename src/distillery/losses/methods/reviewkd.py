"""ReviewKD (Chen et al.): attention-based fusion of the student's stages, deep to shallow, compared with the
teacher's pre-ReLU stage maps by the hierarchical context loss (mdistiller)."""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from distillery.losses.base import Distiller
from distillery.losses.functional import hcl_loss
from distillery.losses.methods._features import stage_shapes
from distillery.losses.registry import register_method


class ABF(nn.Module):
    """Attention-based fusion: conv1 = Conv1x1(in -> mid, no bias) + BN; conv2 = Conv3x3(mid -> out, pad 1, no
    bias) + BN; if ``fuse``, att = Conv1x1(2 mid -> 2, bias) + Sigmoid. conv1/conv2 kaiming_uniform(a=1)."""

    def __init__(self, in_channels: int, mid_channels: int, out_channels: int, fuse: bool):
        super().__init__()
        self.conv1 = nn.Sequential(nn.Conv2d(in_channels, mid_channels, 1, bias=False), nn.BatchNorm2d(mid_channels))
        self.conv2 = nn.Sequential(nn.Conv2d(mid_channels, out_channels, 3, padding=1, bias=False),
                                   nn.BatchNorm2d(out_channels))
        self.att_conv = nn.Sequential(nn.Conv2d(2 * mid_channels, 2, 1), nn.Sigmoid()) if fuse else None
        nn.init.kaiming_uniform_(self.conv1[0].weight, a=1)
        nn.init.kaiming_uniform_(self.conv2[0].weight, a=1)

    def forward(self, x: Tensor, residual: Tensor | None, shape: int, out_shape: int) -> tuple[Tensor, Tensor]:
        """Returns (output map for the loss, fused map passed on as the next level's residual)."""
        n, _, h, w = x.shape
        x = self.conv1(x)
        if self.att_conv is not None:
            residual = F.interpolate(residual, (shape, shape), mode="nearest")
            z = self.att_conv(torch.cat([x, residual], dim=1))
            x = x * z[:, 0].view(n, 1, h, w) + residual * z[:, 1].view(n, 1, h, w)
        if x.shape[-1] != out_shape:
            x = F.interpolate(x, (out_shape, out_shape), mode="nearest")
        return self.conv2(x), x


@register_method("reviewkd")
class ReviewKD(Distiller):
    """kd_weight * min(epoch / warmup_epochs, 1) * hcl_loss(fused student levels, teacher levels).

    Levels, shallow to deep: the last n stage maps of the student's ``feats`` (``preact_feats`` with
    ``stu_preact``) and of the teacher's ``preact_feats[1:]`` (n = the smaller count), then each network's
    pooled feature as a B x D x 1 x 1 map. The official configuration lists (IN/OUT_CHANNELS, SHAPES,
    OUT_SHAPES) are derived from the probed shapes in ``setup``: channels of the student / teacher levels,
    spatial sizes (square maps) of the student / teacher levels; mid channels = min(512, student pooled dim)
    (quirk: the official MAX_MID_CHANNEL is read but unused). CIFAR resnet32x4 -> resnet8x4 gives the official
    [64, 128, 256, 256] and [1, 8, 16, 32]. Aligning the teacher to the last n levels is a deviation only where
    the official would pair misaligned levels (a teacher with more stages than the student).
    mdistiller: CE 1, kd_weight 1 (CIFAR config 5; ImageNet 1 / 8), warm-up 20 (ImageNet 1), stu_preact False
    (ImageNet True).
    """

    teacher_outputs = ("preact_feats", "pooled")

    def __init__(self, kd_weight: float = 1.0, warmup_epochs: float = 20.0, stu_preact: bool = False,
                 ce_weight: float = 1.0):
        super().__init__(kd_weight, ce_weight)
        self.warmup_epochs, self.stu_preact = float(warmup_epochs), bool(stu_preact)
        self.abfs: nn.ModuleList | None = None
        self.n_levels = 0
        self.shapes: list[int] = []
        self.out_shapes: list[int] = []

    def _student_maps(self, out) -> list:
        return out.preact_feats if self.stu_preact else out.feats

    def setup(self, student_shapes: dict, teacher_shapes: dict) -> None:
        key = "preact_feats" if self.stu_preact else "feats"
        s = stage_shapes(student_shapes, key, "reviewkd", skip_first=False)
        t = stage_shapes(teacher_shapes, "preact_feats", "reviewkd")
        n = self.n_levels = min(len(s), len(t))
        s, t = s[-n:], t[-n:]
        in_channels = [shape[1] for shape in s] + [student_shapes["pooled"][-1]]
        out_channels = [shape[1] for shape in t] + [teacher_shapes["pooled"][-1]]
        self.shapes = [1] + [shape[2] for shape in reversed(s)]
        self.out_shapes = [1] + [shape[2] for shape in reversed(t)]
        mid = min(512, in_channels[-1])
        abfs = [ABF(c_in, mid, c_out, i < len(in_channels) - 1)
                for i, (c_in, c_out) in enumerate(zip(in_channels, out_channels))]
        self.abfs = nn.ModuleList(abfs[::-1])

    def forward(self, student, teacher, target):
        if self.abfs is None:
            raise RuntimeError("reviewkd: call setup(...) before the first forward")
        n = self.n_levels
        x = self._student_maps(student)[-n:] + [student.pooled[:, :, None, None]]
        x = x[::-1]
        out, residual = self.abfs[0](x[0], None, self.shapes[0], self.out_shapes[0])
        results = [out]
        for feat, abf, shape, out_shape in zip(x[1:], self.abfs[1:], self.shapes[1:], self.out_shapes[1:]):
            out, residual = abf(feat, residual, shape, out_shape)
            results.insert(0, out)
        feats_t = teacher.preact_feats[1:][-n:] + [teacher.pooled[:, :, None, None]]
        loss = self.warmup_factor(self.warmup_epochs) * hcl_loss(results, feats_t)
        return {"kd": self.kd_weight * loss}
