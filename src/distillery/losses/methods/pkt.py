"""PKT (Passalis & Tefas): KL between the batch's cosine-similarity distributions."""

from distillery.losses.base import Distiller
from distillery.losses.functional import pkt_loss
from distillery.losses.registry import register_method


@register_method("pkt")
class PKT(Distiller):
    """kd_weight * pkt_loss(emb_s, emb_t); D3still uses kd_weight 30000."""

    def __init__(self, kd_weight: float = 30000.0, eps: float = 1e-7):
        super().__init__(kd_weight)
        self.eps = float(eps)

    def forward(self, student, teacher, target):
        return {"kd": self.kd_weight * pkt_loss(student.embedding, teacher.embedding, eps=self.eps)}
