"""Vanilla: the student trained alone with the task loss (CE + triplet); no distillation term."""

from distillery.losses.base import Distiller
from distillery.losses.registry import register_method


@register_method("vanilla")
class Vanilla(Distiller):
    """No teacher: retrieval is symmetric (student queries against a student gallery), as D3still's ``NONE``."""

    teacher_outputs = ()

    def __init__(self):
        super().__init__(kd_weight=0.0)

    def forward(self, student, teacher, target):
        return {}
