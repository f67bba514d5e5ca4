"""NKD (Yang et al., "From knowledge distillation to self-knowledge distillation"), as the SDD repository
implements it (its ``NKDLoss`` distiller)."""

from distillery.losses.base import Distiller
from distillery.losses.functional import nkd_loss
from distillery.losses.registry import register_method


@register_method("nkd")
class NKD(Distiller):
    """kd_weight * min(epoch / warmup_epochs, 1) * nkd_loss(z_s, z_t, y, T, gamma).

    The official distiller hard-codes T 1 and gamma 1.5 (the defaults here), CE weight cfg.DKD.CE_WEIGHT (1) and
    warm-up cfg.DKD.WARMUP (20; ImageNet 1); no outer KD weight (``kd_weight`` 1). See ``nkd_loss`` for the
    all-classes "non-target" quirk (the term is not 0 when student and teacher agree).
    """

    teacher_outputs = ("logits",)

    def __init__(self, kd_weight: float = 1.0, temperature: float = 1.0, gamma: float = 1.5,
                 warmup_epochs: float = 20.0, ce_weight: float = 1.0):
        super().__init__(kd_weight, ce_weight)
        self.temperature, self.gamma, self.warmup_epochs = float(temperature), float(gamma), float(warmup_epochs)

    def forward(self, student, teacher, target):
        loss = nkd_loss(student.logits, teacher.logits, target, temperature=self.temperature, gamma=self.gamma)
        return {"kd": self.kd_weight * self.warmup_factor(self.warmup_epochs) * loss}
