"""VID (Ahn et al.): variational information distillation, a Gaussian likelihood of the teacher's stage maps
under a regressor of the student's (mdistiller)."""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from distillery.losses.base import Distiller
from distillery.losses.functional import vid_loss
from distillery.losses.methods._features import stage_shapes
from distillery.losses.registry import register_method


def _regressor(c_s: int, c_t: int) -> nn.Sequential:
    """Conv1x1(C_s -> C_t) - ReLU - Conv1x1(C_t -> C_t) - ReLU - Conv1x1(C_t -> C_t), bias-free, default init."""
    return nn.Sequential(nn.Conv2d(c_s, c_t, 1, bias=False), nn.ReLU(), nn.Conv2d(c_t, c_t, 1, bias=False), nn.ReLU(),
                         nn.Conv2d(c_t, c_t, 1, bias=False))


@register_method("vid")
class VID(Distiller):
    """kd_weight * sum over stage pairs of feats[1:] of vid_loss(regressor_i(f_s), log_scale_i, f_t, eps).

    The raw student map is square-pooled to the teacher's height before its regressor when it is taller (the
    official order). log_scale is initialised to log(exp(init_pred_var - eps) - 1), so the variance starts at
    init_pred_var. Quirk reproduced by ``learn_variance=False`` (default): the official keeps the log-scales in
    a plain list, so they are never optimised nor saved and the variance stays init_pred_var; here they are
    then non-persistent buffers (``learn_variance=True`` makes them trained parameters). mdistiller: CE 1,
    kd_weight 1, eps 1e-5, init_pred_var 5. Deviation: shapes are probed in eval mode (see FitNet).
    """

    teacher_outputs = ("feats",)

    def __init__(self, kd_weight: float = 1.0, eps: float = 1e-5, init_pred_var: float = 5.0,
                 learn_variance: bool = False, ce_weight: float = 1.0):
        super().__init__(kd_weight, ce_weight)
        self.eps, self.init_pred_var, self.learn_variance = float(eps), float(init_pred_var), bool(learn_variance)
        self.regressors: nn.ModuleList | None = None

    def setup(self, student_shapes: dict, teacher_shapes: dict) -> None:
        pairs = list(zip(stage_shapes(student_shapes, "feats", "vid"), stage_shapes(teacher_shapes, "feats", "vid")))
        self.regressors = nn.ModuleList([_regressor(s[1], t[1]) for s, t in pairs])
        init = math.log(math.exp(self.init_pred_var - self.eps) - 1.0)
        for i, (_, t) in enumerate(pairs):
            value = torch.full((t[1],), init)
            if self.learn_variance:
                self.register_parameter(f"log_scale{i}", nn.Parameter(value))
            else:
                self.register_buffer(f"log_scale{i}", value, persistent=False)

    def forward(self, student, teacher, target):
        if self.regressors is None:
            raise RuntimeError("vid: call setup(...) before the first forward")
        total = 0.0
        for i, (f_s, f_t, regressor) in enumerate(zip(student.feats[1:], teacher.feats[1:], self.regressors)):
            h_t = f_t.shape[2]
            if f_s.shape[2] > h_t:
                f_s = F.adaptive_avg_pool2d(f_s, (h_t, h_t))
            total = total + vid_loss(regressor(f_s), getattr(self, f"log_scale{i}"), f_t, eps=self.eps)
        return {"kd": self.kd_weight * total}
