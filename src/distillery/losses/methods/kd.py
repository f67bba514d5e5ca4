"""KD (Hinton et al.): KL between temperature-softened logits (D3still VanillaKD / MDistiller KD)."""

from distillery.losses.base import Distiller
from distillery.losses.functional import kd_loss
from distillery.losses.registry import register_method


@register_method("kd")
class KD(Distiller):
    """kd_weight * kd_loss(student logits, teacher logits, T); teacher and student share the label space.

    Defaults: D3still's VanillaKD (kd_weight 1, T 2). MDistiller CIFAR: ce_weight 0.1, kd_weight 0.9, T 4;
    ImageNet: 0.5 / 0.5, T 1 (``ce_weight`` is read by the classification trainer only).
    """

    teacher_outputs = ("logits",)

    def __init__(self, kd_weight: float = 1.0, temperature: float = 2.0, ce_weight: float = 1.0):
        super().__init__(kd_weight, ce_weight)
        self.temperature = float(temperature)

    def forward(self, student, teacher, target):
        return {"kd": self.kd_weight * kd_loss(student.logits, teacher.logits, self.temperature)}
