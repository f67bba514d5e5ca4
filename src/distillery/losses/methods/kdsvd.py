"""KDSVD (Lee et al.): distil the relations between consecutive stages' leading singular vectors (mdistiller)."""

from distillery.losses.base import Distiller
from distillery.losses.functional import kdsvd_loss
from distillery.losses.methods._features import stage_shapes
from distillery.losses.registry import register_method


@register_method("kdsvd")
class KDSVD(Distiller):
    """kd_weight * kdsvd_loss(feats_s[1:], feats_t[1:], k); mdistiller: CE 1, kd_weight 1, k 1.

    Needs at least two stage pairs in ``feats[1:]`` (the first pair only provides the "previous" singular
    vectors; with one pair the loss is a constant zero).
    """

    teacher_outputs = ("feats",)

    def __init__(self, kd_weight: float = 1.0, k: int = 1, ce_weight: float = 1.0):
        super().__init__(kd_weight, ce_weight)
        self.k = int(k)

    def setup(self, student_shapes: dict, teacher_shapes: dict) -> None:
        pairs = min(len(stage_shapes(student_shapes, "feats", "kdsvd")), len(stage_shapes(teacher_shapes, "feats", "kdsvd")))
        if pairs < 2:
            raise ValueError(f"kdsvd needs at least two stage pairs in feats[1:], the networks give {pairs}")

    def forward(self, student, teacher, target):
        return {"kd": self.kd_weight * kdsvd_loss(student.feats[1:], teacher.feats[1:], k=self.k)}
