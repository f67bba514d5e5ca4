"""SD-NKD (scale decoupled distillation with NKD on every SPP region logit)."""

from distillery.losses.base import Distiller
from distillery.losses.functional import nkd_loss, sdd_nkd_loss
from distillery.losses.methods._features import patch_logits
from distillery.losses.methods.sdd_kd import check_patch_shapes
from distillery.losses.registry import register_method


@register_method("sdd_nkd")
class SDDNKD(Distiller):
    """kd_weight * min(epoch / warmup_epochs, 1) * sdd_nkd_loss(patch_s, patch_t, y, T, gamma).

    N = 1 (M = [1]): nkd_loss on the main logits with the same T and gamma. Official: T = cfg.DKD.T (4),
    gamma = cfg.DKD.BETA (8; 6 for VGG13 / WRN->MV2 pairs), CE cfg.DKD.CE_WEIGHT (1), warm-up cfg.DKD.WARMUP
    (20; ImageNet 1); no outer KD weight (``kd_weight`` 1).
    """

    teacher_outputs = ("logits", "extras")

    def __init__(self, kd_weight: float = 1.0, temperature: float = 4.0, gamma: float = 8.0,
                 warmup_epochs: float = 20.0, ce_weight: float = 1.0):
        super().__init__(kd_weight, ce_weight)
        self.temperature, self.gamma, self.warmup_epochs = float(temperature), float(gamma), float(warmup_epochs)

    def setup(self, student_shapes: dict, teacher_shapes: dict) -> None:
        check_patch_shapes(student_shapes, teacher_shapes, "sdd_nkd")

    def forward(self, student, teacher, target):
        patch_s, patch_t = patch_logits(student, "sdd_nkd"), patch_logits(teacher, "sdd_nkd")
        hyper = {"temperature": self.temperature, "gamma": self.gamma}
        if patch_s.shape[2] == 1:
            loss = nkd_loss(student.logits, teacher.logits, target, **hyper)
        else:
            loss = sdd_nkd_loss(patch_s, patch_t, target, **hyper)
        return {"kd": self.kd_weight * self.warmup_factor(self.warmup_epochs) * loss}
