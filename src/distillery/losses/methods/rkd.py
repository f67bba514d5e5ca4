"""RKD (Park et al.): distance- and angle-wise relational distillation."""

from distillery.losses.base import Distiller
from distillery.losses.functional import rkd_loss
from distillery.losses.methods._features import check_feature
from distillery.losses.registry import register_method


@register_method("rkd")
class RKD(Distiller):
    """kd_weight * (distance_weight * L_dist + angle_weight * L_angle) on ``feature`` of both networks.

    ``feature``: ``embedding`` (D3still, the default: the retrieval embeddings) or ``pooled`` (mdistiller: the
    pooled feature fed to the classifier; CE 1, kd_weight 1). In retrieval, relations only never align the
    student's space with the teacher's (asymmetric retrieval falls to chance, as in the paper's table).
    """

    def __init__(self, kd_weight: float = 1.0, distance_weight: float = 25.0, angle_weight: float = 50.0,
                 squared: bool = False, eps: float = 1e-12, feature: str = "embedding", ce_weight: float = 1.0):
        super().__init__(kd_weight, ce_weight)
        self.distance_weight, self.angle_weight = float(distance_weight), float(angle_weight)
        self.squared, self.eps = bool(squared), float(eps)
        self.feature = check_feature(feature, "rkd")
        self.teacher_outputs = (self.feature,)

    def forward(self, student, teacher, target):
        loss = rkd_loss(getattr(student, self.feature), getattr(teacher, self.feature), squared=self.squared,
                        eps=self.eps, distance_weight=self.distance_weight, angle_weight=self.angle_weight)
        return {"kd": self.kd_weight * loss}
