"""ROP (Wu et al., ICLR 2023): preserve the teacher's rank order of each query's in-batch top-k list."""

from distillery.losses.base import Distiller
from distillery.losses.functional import rop_loss
from distillery.losses.registry import register_method


@register_method("rop")
class ROP(Distiller):
    """kd_weight * rop_loss(emb_s, emb_t, topk, temperature, rank_weight) (float64).

    D3still: kd_weight 1, topk 256 (= the KD batch), temperature 0.1, rank_weight 0.2. The official code
    crashes for topk > B; the loss math clamps k = min(topk, B) (flagged extension, same value at topk = B).
    Quirk (official): the gallery is the in-batch teacher embeddings, not an offline train-set gallery.
    """

    needs_equal_embedding_dims = True

    def __init__(self, kd_weight: float = 1.0, topk: int = 256, temperature: float = 0.1, rank_weight: float = 0.2):
        super().__init__(kd_weight)
        self.topk, self.temperature, self.rank_weight = int(topk), float(temperature), float(rank_weight)

    def forward(self, student, teacher, target):
        loss = rop_loss(student.embedding, teacher.embedding, topk=self.topk, temperature=self.temperature,
                        rank_weight=self.rank_weight)
        return {"kd": self.kd_weight * loss}
