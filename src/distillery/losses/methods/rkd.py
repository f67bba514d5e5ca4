"""RKD (Park et al.): distance- and angle-wise relational distillation on the retrieval embeddings."""

from distillery.losses.base import Distiller
from distillery.losses.functional import rkd_loss
from distillery.losses.registry import register_method


@register_method("rkd")
class RKD(Distiller):
    """kd_weight * (distance_weight * L_dist + angle_weight * L_angle); relations only, so the student's space
    is never aligned with the teacher's (asymmetric retrieval falls to chance, as in the paper's table)."""

    def __init__(self, kd_weight: float = 1.0, distance_weight: float = 25.0, angle_weight: float = 50.0,
                 squared: bool = False, eps: float = 1e-12):
        super().__init__(kd_weight)
        self.distance_weight, self.angle_weight = float(distance_weight), float(angle_weight)
        self.squared, self.eps = bool(squared), float(eps)

    def forward(self, student, teacher, target):
        loss = rkd_loss(student.embedding, teacher.embedding, squared=self.squared, eps=self.eps,
                        distance_weight=self.distance_weight, angle_weight=self.angle_weight)
        return {"kd": self.kd_weight * loss}
