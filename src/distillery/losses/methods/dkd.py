"""DKD (Zhao et al., CVPR 2022): decoupled KD, target-class and non-target-class terms weighted separately."""

from distillery.losses.base import Distiller
from distillery.losses.functional import dkd_loss
from distillery.losses.registry import register_method


@register_method("dkd")
class DKD(Distiller):
    """kd_weight * min(epoch / warmup_epochs, 1) * dkd_loss(z_s, z_t, y, alpha, beta, T).

    The official module has no outer KD weight (``kd_weight`` 1 reproduces it). Warm-up with the 1-based epoch
    set by the classification trainer (epoch 1 of 20 -> 0.05). mdistiller CIFAR: CE 1, alpha 1, beta 8
    (per pair: 2 for resnet56/110 pairs, 6 for WRN and VGG13 pairs), T 4, warm-up 20; ImageNet: beta 0.5
    (R34 -> R18) / 2 (R50 -> MV1), T 1, warm-up 1.
    """

    teacher_outputs = ("logits",)

    def __init__(self, kd_weight: float = 1.0, alpha: float = 1.0, beta: float = 8.0, temperature: float = 4.0,
                 warmup_epochs: float = 20.0, ce_weight: float = 1.0):
        super().__init__(kd_weight, ce_weight)
        self.alpha, self.beta, self.temperature = float(alpha), float(beta), float(temperature)
        self.warmup_epochs = float(warmup_epochs)

    def forward(self, student, teacher, target):
        loss = dkd_loss(student.logits, teacher.logits, target, alpha=self.alpha, beta=self.beta,
                        temperature=self.temperature)
        return {"kd": self.kd_weight * self.warmup_factor(self.warmup_epochs) * loss}
