"""DOT (Zhao et al., ICCV 2023): the distillation-oriented trainer, KD with separate momentum buffers for the
task and the distillation gradients (mdistiller's ``DOT`` trainer with the KD distiller)."""

from distillery.losses.math.dot import DistillationOrientedSGD, dot_momenta
from distillery.losses.methods.kd import KD
from distillery.losses.registry import register_method


@register_method("dot")
class DOT(KD):
    """The KD terms (kd_weight * kd_loss, CE weight ``ce_weight``) optimised by ``DistillationOrientedSGD``.

    ``make_optimizer`` returns it with momenta (momentum - delta) for the task buffer and (momentum + delta)
    for the KD buffer; the classification trainer then back-propagates the KD term first (``step_kd``), then
    the CE (``step``), as the official trainer. mdistiller CIFAR / Tiny-ImageNet: CE 0.1, kd_weight 0.9, T 4,
    delta 0.075 (momenta 0.825 / 0.975); ImageNet: 0.5 / 0.5, T 1, delta 0.09.
    """

    def __init__(self, kd_weight: float = 0.9, temperature: float = 4.0, delta: float = 0.075,
                 ce_weight: float = 0.1):
        super().__init__(kd_weight, temperature, ce_weight)
        self.delta = float(delta)

    def make_optimizer(self, params, recipe):
        momentum, momentum_kd = dot_momenta(recipe.momentum, self.delta)
        if momentum < 0:
            raise ValueError(f"dot: delta {self.delta} exceeds the momentum {recipe.momentum}")
        return DistillationOrientedSGD(params, lr=recipe.lr, momentum=momentum, momentum_kd=momentum_kd,
                                       weight_decay=recipe.weight_decay)
