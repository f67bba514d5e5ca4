"""AT (Zagoruyko & Komodakis): match normalised spatial attention maps of every stage (mdistiller)."""

from distillery.losses.base import Distiller
from distillery.losses.functional import at_loss
from distillery.losses.methods._features import stage_shapes
from distillery.losses.registry import register_method


@register_method("at")
class AT(Distiller):
    """kd_weight * at_loss(feats_s[1:], feats_t[1:], p), stages paired by zip (the shorter list wins).

    mdistiller: CE 1, kd_weight 1000, p 2 (CIFAR and ImageNet).
    """

    teacher_outputs = ("feats",)

    def __init__(self, kd_weight: float = 1000.0, p: float = 2.0, ce_weight: float = 1.0):
        super().__init__(kd_weight, ce_weight)
        self.p = float(p)

    def setup(self, student_shapes: dict, teacher_shapes: dict) -> None:
        stage_shapes(student_shapes, "feats", "at"), stage_shapes(teacher_shapes, "feats", "at")

    def forward(self, student, teacher, target):
        return {"kd": self.kd_weight * at_loss(student.feats[1:], teacher.feats[1:], p=self.p)}
