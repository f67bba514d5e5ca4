"""CSD (Wu et al., CVPR 2023): match the student's and the teacher's similarity distributions over the
teacher's in-batch top-k neighbours."""

from distillery.losses.base import Distiller
from distillery.losses.functional import csd_loss
from distillery.losses.registry import register_method


@register_method("csd")
class CSD(Distiller):
    """kd_weight * csd_loss(emb_s, emb_t, top_k, temp_student, temp_teacher) (float64).

    D3still: kd_weight 10, top_k 256 (= the KD batch, i.e. the whole batch), temperatures 1 (query) and
    0.01 (gallery). Quirk (official): the gallery is the in-batch teacher embeddings, not the paper's offline
    train-set gallery.
    """

    needs_equal_embedding_dims = True

    def __init__(self, kd_weight: float = 10.0, top_k: int = 256, temp_student: float = 1.0,
                 temp_teacher: float = 0.01):
        super().__init__(kd_weight)
        self.top_k, self.temp_student, self.temp_teacher = int(top_k), float(temp_student), float(temp_teacher)

    def forward(self, student, teacher, target):
        loss = csd_loss(student.embedding, teacher.embedding, top_k=self.top_k, temp_student=self.temp_student,
                        temp_teacher=self.temp_teacher)
        return {"kd": self.kd_weight * loss}
