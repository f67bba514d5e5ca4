"""D3still (Xie et al., CVPR 2024): feature alignment + decoupled differential ranking distillation."""

from distillery.losses.base import Distiller
from distillery.losses.functional import d3still_loss
from distillery.losses.registry import register_method


@register_method("d3still")
class D3still(Distiller):
    """kd_weight * d3still_loss(emb_s, emb_t, topk, alpha, beta, gamma) (float64).

    Defaults: the CUB/In-Shop/SOP R101 -> R18 configs (topk 10, alpha 100, beta 5, gamma 1, kd_weight 1);
    MSMT17 uses 50/2/1 and MobileNetV3 students 200/10/2 (configs/*.yaml).
    """

    needs_equal_embedding_dims = True

    def __init__(self, kd_weight: float = 1.0, topk: int = 10, alpha: float = 100.0, beta: float = 5.0,
                 gamma: float = 1.0):
        super().__init__(kd_weight)
        self.topk = int(topk)
        self.alpha, self.beta, self.gamma = float(alpha), float(beta), float(gamma)

    def forward(self, student, teacher, target):
        loss = d3still_loss(student.embedding, teacher.embedding, topk=self.topk, alpha=self.alpha,
                            beta=self.beta, gamma=self.gamma)
        return {"kd": self.kd_weight * loss}
