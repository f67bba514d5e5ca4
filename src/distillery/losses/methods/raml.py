"""RAML (Suma et al., WACV 2023): absolute + relational (second-order) alignment of normalised embeddings."""

from distillery.losses.base import Distiller
from distillery.losses.functional import raml_loss
from distillery.losses.registry import register_method


@register_method("raml")
class RAML(Distiller):
    """kd_weight * raml_loss(emb_s, emb_t, lambda1, lambda2); D3still uses kd_weight 10, lambda1 0.7482.

    Quirk reproduced by the default ``lambda2 = 0.7482``: the official RAML module passes LAMBDA1 as the
    second lambda, so its configs' LAMBDA2 = 0.6778 is never used (official training has lambda2 = lambda1).
    Set ``lambda2: 0.6778`` for the loss as the paper/configs intend it.
    """

    needs_equal_embedding_dims = True

    def __init__(self, kd_weight: float = 10.0, lambda1: float = 0.7482, lambda2: float = 0.7482):
        super().__init__(kd_weight)
        self.lambda1, self.lambda2 = float(lambda1), float(lambda2)

    def forward(self, student, teacher, target):
        loss = raml_loss(student.embedding, teacher.embedding, lambda1=self.lambda1, lambda2=self.lambda2)
        return {"kd": self.kd_weight * loss}
