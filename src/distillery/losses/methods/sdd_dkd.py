"""SD-DKD (scale decoupled distillation with DKD on every SPP region logit)."""

from distillery.losses.base import Distiller
from distillery.losses.functional import dkd_loss, sdd_dkd_loss
from distillery.losses.methods._features import patch_logits
from distillery.losses.methods.sdd_kd import check_patch_shapes
from distillery.losses.registry import register_method


@register_method("sdd_dkd")
class SDDDKD(Distiller):
    """kd_weight * min(epoch / warmup_epochs, 1) * sdd_dkd_loss(patch_s, patch_t, y, alpha, beta, T).

    N = 1 (M = [1]): MDistiller's dkd_loss on the main logits. Official warm-up: the CLI ``--warmup`` (20; 1 in
    the ImageNet script), not cfg.DKD.WARMUP. SDD CIFAR: CE 1, alpha 1, beta 8 (6 for VGG13 / WRN->MV2 pairs),
    T 4; ImageNet T 1, beta 0.5 (R34->R18) / 2 (R50->MV1). No outer KD weight officially (``kd_weight`` 1).
    """

    teacher_outputs = ("logits", "extras")

    def __init__(self, kd_weight: float = 1.0, alpha: float = 1.0, beta: float = 8.0, temperature: float = 4.0,
                 warmup_epochs: float = 20.0, ce_weight: float = 1.0):
        super().__init__(kd_weight, ce_weight)
        self.alpha, self.beta, self.temperature = float(alpha), float(beta), float(temperature)
        self.warmup_epochs = float(warmup_epochs)

    def setup(self, student_shapes: dict, teacher_shapes: dict) -> None:
        check_patch_shapes(student_shapes, teacher_shapes, "sdd_dkd")

    def forward(self, student, teacher, target):
        patch_s, patch_t = patch_logits(student, "sdd_dkd"), patch_logits(teacher, "sdd_dkd")
        hyper = {"alpha": self.alpha, "beta": self.beta, "temperature": self.temperature}
        if patch_s.shape[2] == 1:
            loss = dkd_loss(student.logits, teacher.logits, target, **hyper)
        else:
            loss = sdd_dkd_loss(patch_s, patch_t, target, **hyper)
        return {"kd": self.kd_weight * self.warmup_factor(self.warmup_epochs) * loss}
