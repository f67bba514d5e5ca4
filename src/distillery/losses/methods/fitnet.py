"""FitNet as D3still uses it: MSE between the final retrieval embeddings (no hint layer, no connector)."""

from distillery.losses.base import Distiller
from distillery.losses.functional import fitnet_loss
from distillery.losses.registry import register_method


@register_method("fitnet")
class FitNet(Distiller):
    """kd_weight * mean((emb_s - emb_t)^2). Needs equal embedding dims (D3still quirk: no connector)."""

    needs_equal_embedding_dims = True

    def __init__(self, kd_weight: float = 2.0):
        super().__init__(kd_weight)

    def forward(self, student, teacher, target):
        return {"kd": self.kd_weight * fitnet_loss(student.embedding, teacher.embedding)}
