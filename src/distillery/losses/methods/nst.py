"""NST (Huang & Wang): match the distributions of channel activations with a degree-2 polynomial-kernel MMD
(mdistiller)."""

from distillery.losses.base import Distiller
from distillery.losses.functional import nst_loss
from distillery.losses.methods._features import stage_shapes
from distillery.losses.registry import register_method


@register_method("nst")
class NST(Distiller):
    """kd_weight * nst_loss(feats_s[1:], feats_t[1:]); mdistiller: CE 1, kd_weight 50."""

    teacher_outputs = ("feats",)

    def __init__(self, kd_weight: float = 50.0, ce_weight: float = 1.0):
        super().__init__(kd_weight, ce_weight)

    def setup(self, student_shapes: dict, teacher_shapes: dict) -> None:
        stage_shapes(student_shapes, "feats", "nst"), stage_shapes(teacher_shapes, "feats", "nst")

    def forward(self, student, teacher, target):
        return {"kd": self.kd_weight * nst_loss(student.feats[1:], teacher.feats[1:])}
