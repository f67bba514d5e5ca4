"""FitNet: MSE between a student feature (through a connector) and the teacher's.

Two flavours, one implementation (the argument is ``hint_layer``):
- retrieval (D3still, ``hint_layer=None``, the default): MSE between the final retrieval embeddings, no
  connector (so the embedding dims must be equal);
- classification (mdistiller): MSE between ``ConvReg(feats_s[hint_layer])`` and ``feats_t[hint_layer]``
  (post-ReLU stage maps; mdistiller's HINT_LAYER 2 = layer2 of the CIFAR ResNets, whose ``feats[0]`` is the stem).
"""

from __future__ import annotations

import torch.nn as nn
from torch import Tensor

from distillery.losses.base import Distiller
from distillery.losses.functional import fitnet_loss
from distillery.losses.registry import register_method


class ConvReg(nn.Module):
    """mdistiller's ConvReg from probed shapes (B x C x H x W): if H_s = 2 H_t a 3x3 stride-2 conv (pad 1); if
    2 H_s = H_t a 4x4 stride-2 transposed conv (pad 1); if H_s >= H_t a (1 + H_s - H_t) x (1 + W_s - W_t) conv;
    then BatchNorm(C_t) and ReLU. Convs with bias, PyTorch default init. A student map smaller than the teacher's
    (other than half) is a ValueError (the official raises there too)."""

    def __init__(self, s_shape, t_shape, use_relu: bool = True):
        super().__init__()
        _, c_s, h_s, w_s = s_shape
        _, c_t, h_t, w_t = t_shape
        if h_s == 2 * h_t:
            self.conv = nn.Conv2d(c_s, c_t, kernel_size=3, stride=2, padding=1)
        elif 2 * h_s == h_t:
            self.conv = nn.ConvTranspose2d(c_s, c_t, kernel_size=4, stride=2, padding=1)
        elif h_s >= h_t:
            self.conv = nn.Conv2d(c_s, c_t, kernel_size=(1 + h_s - h_t, 1 + w_s - w_t))
        else:
            raise ValueError(f"fitnet: no connector from a {h_s}x{w_s} student map to a {h_t}x{w_t} teacher map "
                             f"(needs H_s = 2 H_t, 2 H_s = H_t or H_s >= H_t); pick another hint_layer")
        self.bn = nn.BatchNorm2d(c_t)
        self.relu = nn.ReLU(inplace=True) if use_relu else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        return self.relu(self.bn(self.conv(x)))


@register_method("fitnet")
class FitNet(Distiller):
    """kd_weight * fitnet_loss(...) on the embeddings (``hint_layer`` None) or on hint-layer maps.

    Defaults: D3still (kd_weight 2, embeddings). MDistiller CIFAR: hint_layer 2, kd_weight 100, ce_weight 1.
    Deviation: shapes are probed in eval mode (mdistiller probes in train mode with an N(0, 1) batch, which moves
    the pretrained teacher's BN running statistics once before training; not reproduced).
    """

    def __init__(self, kd_weight: float = 2.0, hint_layer: int | None = None, ce_weight: float = 1.0):
        super().__init__(kd_weight, ce_weight)
        self.hint_layer = None if hint_layer is None else int(hint_layer)
        self.teacher_outputs = ("embedding",) if self.hint_layer is None else ("feats",)
        self.needs_equal_embedding_dims = self.hint_layer is None
        self.conv_reg: ConvReg | None = None

    def setup(self, student_shapes: dict, teacher_shapes: dict) -> None:
        super().setup(student_shapes, teacher_shapes)
        if self.hint_layer is None:
            return
        n = min(len(student_shapes["feats"]), len(teacher_shapes["feats"]))
        if not 0 <= self.hint_layer < n:
            raise ValueError(f"fitnet hint_layer must be in 0..{n - 1} (an index into feats), got {self.hint_layer}")
        self.conv_reg = ConvReg(student_shapes["feats"][self.hint_layer], teacher_shapes["feats"][self.hint_layer])

    def forward(self, student, teacher, target):
        if self.hint_layer is None:
            return {"kd": self.kd_weight * fitnet_loss(student.embedding, teacher.embedding)}
        if self.conv_reg is None:
            raise RuntimeError("fitnet: call setup(...) before the first forward")
        feat_s = self.conv_reg(student.feats[self.hint_layer])
        return {"kd": self.kd_weight * fitnet_loss(feat_s, teacher.feats[self.hint_layer])}
