"""SP (Tung & Mori): similarity-preserving distillation of the batch's Gram matrix (mdistiller)."""

from distillery.losses.base import Distiller
from distillery.losses.functional import sp_loss
from distillery.losses.methods._features import stage_shapes
from distillery.losses.registry import register_method


@register_method("sp")
class SP(Distiller):
    """kd_weight * sp_loss([feats_s[-1]], [feats_t[-1]]) (the last stage only, as mdistiller);
    mdistiller: CE 1, kd_weight 3000."""

    teacher_outputs = ("feats",)

    def __init__(self, kd_weight: float = 3000.0, ce_weight: float = 1.0):
        super().__init__(kd_weight, ce_weight)

    def setup(self, student_shapes: dict, teacher_shapes: dict) -> None:
        stage_shapes(student_shapes, "feats", "sp", False), stage_shapes(teacher_shapes, "feats", "sp", False)

    def forward(self, student, teacher, target):
        return {"kd": self.kd_weight * sp_loss([student.feats[-1]], [teacher.feats[-1]])}
