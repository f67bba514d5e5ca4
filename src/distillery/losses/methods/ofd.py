"""OFD (Heo et al., "A comprehensive overhaul of feature distillation"): partial L2 between the connector
output of the student's pre-ReLU stage maps and the teacher's, with margins from the teacher's BN (mdistiller)."""

from __future__ import annotations

import math

import torch
import torch.nn as nn

from distillery.losses.base import Distiller
from distillery.losses.functional import ofd_loss
from distillery.losses.methods._features import stage_shapes
from distillery.losses.registry import register_method


def ofd_margin(bn: nn.BatchNorm2d) -> torch.Tensor:
    """Per-channel margin (C,) from a BN before a ReLU (weight gamma, bias beta), float32 on the BN's device.

    With s = |gamma|, m = beta: the mean of N(m, s^2) restricted to negative values, m - s phi(m/s) / Phi(-m/s),
    when Phi(-m/s) > 0.001, else -3 s (mdistiller's formula, computed in float64 per channel).
    Raises ValueError for gamma = 0 (the official divides by zero).
    """
    margins = []
    for gamma, beta in zip(bn.weight.detach().cpu().tolist(), bn.bias.detach().cpu().tolist()):
        s, m = abs(gamma), beta
        if s == 0:
            raise ValueError("ofd: a teacher BN weight is 0, its margin is undefined")
        cdf = 0.5 * math.erfc((m / s) / math.sqrt(2))  # Phi(-m / s)
        if cdf > 0.001:
            margins.append(-s * math.exp(-((m / s) ** 2) / 2) / math.sqrt(2 * math.pi) / cdf + m)
        else:
            margins.append(-3 * s)
    return torch.tensor(margins, dtype=torch.float32, device=bn.weight.device)


def _connector(c_s: int, c_t: int, kernel_size: int) -> nn.Sequential:
    """Conv k x k (C_s -> C_t, stride 1, pad (k-1)/2, no bias; N(0, sqrt(2 / (k k C_t)))) + BN(C_t) (1 / 0)."""
    conv = nn.Conv2d(c_s, c_t, kernel_size, stride=1, padding=(kernel_size - 1) // 2, bias=False)
    nn.init.normal_(conv.weight, 0.0, math.sqrt(2.0 / (kernel_size * kernel_size * c_t)))
    bn = nn.BatchNorm2d(c_t)
    nn.init.ones_(bn.weight)
    nn.init.zeros_(bn.bias)
    return nn.Sequential(conv, bn)


@register_method("ofd")
class OFD(Distiller):
    """kd_weight * sum_i ofd_loss(connector_i(pre_s_i), pre_t_i, margin_i) / 2^(n-1-i).

    Stages: ``preact_feats[1:]`` of both networks, aligned to their last n = min(len) entries (as the official
    ``_align_list``); connectors sized from the probed shapes in ``setup``; margins from the last n BNs of
    ``teacher.get_bn_before_relu()`` in ``bind_teacher`` (kept as non-persistent buffers: not optimised, not
    saved, recomputed at construction, as the official plain list). mdistiller: CE 1, kd_weight 1e-3 (CIFAR;
    ImageNet 1e-4), kernel 1.
    Quirk reproduced by ``teacher_train_mode=True`` (default): the official OFD overrides ``train()`` without
    putting the teacher back in eval mode, so the frozen teacher runs with batch-statistics BN (and updates
    its running statistics) during training. Official indexing quirk not reproduced: it takes the *first* n
    margins while the stages are the *last* n (only differs when the teacher has more stages than the
    student, where the official fails on a channel mismatch).
    """

    teacher_outputs = ("preact_feats",)

    def __init__(self, kd_weight: float = 1e-3, kernel_size: int = 1, teacher_train_mode: bool = True,
                 ce_weight: float = 1.0):
        super().__init__(kd_weight, ce_weight)
        self.kernel_size = int(kernel_size)
        self.teacher_train_mode = bool(teacher_train_mode)
        self.connectors: nn.ModuleList | None = None
        self.n_stages = 0

    def setup(self, student_shapes: dict, teacher_shapes: dict) -> None:
        s = stage_shapes(student_shapes, "preact_feats", "ofd")
        t = stage_shapes(teacher_shapes, "preact_feats", "ofd")
        self.n_stages = n = min(len(s), len(t))
        self.connectors = nn.ModuleList([_connector(cs[1], ct[1], self.kernel_size) for cs, ct in zip(s[-n:], t[-n:])])

    def bind_teacher(self, teacher: nn.Module) -> None:
        try:
            bns = list(teacher.get_bn_before_relu())
        except (AttributeError, NotImplementedError):
            raise ValueError(f"ofd needs a teacher with get_bn_before_relu(); {type(teacher).__name__} has "
                             f"none") from None
        if len(bns) < self.n_stages:
            raise ValueError(f"ofd: the teacher gives {len(bns)} BNs before ReLUs for {self.n_stages} stages")
        for i, bn in enumerate(bns[len(bns) - self.n_stages:]):
            self.register_buffer(f"margin{i}", ofd_margin(bn).reshape(1, -1, 1, 1), persistent=False)

    def forward(self, student, teacher, target):
        if self.connectors is None or not hasattr(self, "margin0"):
            raise RuntimeError("ofd: call setup(...) and bind_teacher(teacher) before the first forward")
        n = self.n_stages
        feats_s, feats_t = student.preact_feats[1:][-n:], teacher.preact_feats[1:][-n:]
        total = 0.0
        for i, (f_s, f_t, connector) in enumerate(zip(feats_s, feats_t, self.connectors)):
            total = total + ofd_loss(connector(f_s), f_t, getattr(self, f"margin{i}")) / 2 ** (n - i - 1)
        return {"kd": self.kd_weight * total}
