"""PKT (Passalis & Tefas): KL between the batch's cosine-similarity distributions."""

from distillery.losses.base import Distiller
from distillery.losses.functional import pkt_loss
from distillery.losses.methods._features import check_feature
from distillery.losses.registry import register_method


@register_method("pkt")
class PKT(Distiller):
    """kd_weight * pkt_loss(f_s, f_t) on ``feature`` (``embedding``: D3still, the default; ``pooled``:
    mdistiller). Both seeds use kd_weight 30000 (mdistiller: CE 1)."""

    def __init__(self, kd_weight: float = 30000.0, eps: float = 1e-7, feature: str = "embedding",
                 ce_weight: float = 1.0):
        super().__init__(kd_weight, ce_weight)
        self.eps = float(eps)
        self.feature = check_feature(feature, "pkt")
        self.teacher_outputs = (self.feature,)

    def forward(self, student, teacher, target):
        loss = pkt_loss(getattr(student, self.feature), getattr(teacher, self.feature), eps=self.eps)
        return {"kd": self.kd_weight * loss}
