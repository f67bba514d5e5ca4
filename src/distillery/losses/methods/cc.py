"""CC as D3still codes it: product of consecutive samples' embedding residuals (not the paper's kernel)."""

from distillery.losses.base import Distiller
from distillery.losses.functional import cc_loss
from distillery.losses.registry import register_method


@register_method("cc")
class CC(Distiller):
    """kd_weight * cc_loss(emb_s, emb_t, normalize); D3still uses kd_weight 5 and normalize=True.

    Quirk (official): the value depends on the order of the KD batch (row b is paired with row b + 1).
    """

    needs_equal_embedding_dims = True

    def __init__(self, kd_weight: float = 5.0, normalize: bool = True):
        super().__init__(kd_weight)
        self.normalize = bool(normalize)

    def forward(self, student, teacher, target):
        return {"kd": self.kd_weight * cc_loss(student.embedding, teacher.embedding, normalize=self.normalize)}
