"""SD-KD (Wei et al., CVPR 2024, scale decoupled distillation): KD on every SPP region logit, with
complementary regions (teacher region and global prediction disagree in correctness) weighted 2."""

from distillery.losses.base import Distiller
from distillery.losses.functional import kd_loss, sdd_kd_loss
from distillery.losses.methods._features import patch_logits
from distillery.losses.registry import register_method


@register_method("sdd_kd")
class SDDKD(Distiller):
    """kd_weight * sdd_kd_loss(patch_s, patch_t, y, T) on the models' ``extras["patch_logits"]`` (B x C x N).

    The pyramid (official ``--M``) is the models' ``spp`` option; with N = 1 (M = [1]) the module uses
    kd_loss on the main logits, as the official. No warm-up (the official stores one but never uses it).
    SDD defaults everywhere (also ImageNet): CE 0.1, kd_weight 0.9, T 4.
    """

    teacher_outputs = ("logits", "extras")

    def __init__(self, kd_weight: float = 0.9, temperature: float = 4.0, ce_weight: float = 0.1):
        super().__init__(kd_weight, ce_weight)
        self.temperature = float(temperature)

    def setup(self, student_shapes: dict, teacher_shapes: dict) -> None:
        check_patch_shapes(student_shapes, teacher_shapes, "sdd_kd")

    def forward(self, student, teacher, target):
        patch_s, patch_t = patch_logits(student, "sdd_kd"), patch_logits(teacher, "sdd_kd")
        if patch_s.shape[2] == 1:
            loss = kd_loss(student.logits, teacher.logits, self.temperature)
        else:
            loss = sdd_kd_loss(patch_s, patch_t, target, temperature=self.temperature)
        return {"kd": self.kd_weight * loss}


def check_patch_shapes(student_shapes: dict, teacher_shapes: dict, method: str) -> None:
    """Both networks must give patch logits with the same number of regions."""
    s, t = student_shapes["extras"].get("patch_logits"), teacher_shapes["extras"].get("patch_logits")
    if s is None or t is None:
        which = "student" if s is None else "teacher"
        raise ValueError(f"{method} needs SDD patch logits from both networks; the {which} has none: set its "
                         f"model_options spp: [1, 2, 4] (or [1, 2], [1])")
    if s[-1] != t[-1] or s[1] != t[1]:
        raise ValueError(f"{method}: student and teacher patch logits differ ({tuple(s)} vs {tuple(t)}); use the "
                         f"same spp scales and number of classes for both")
