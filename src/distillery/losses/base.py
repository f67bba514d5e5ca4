"""The distiller interface every method implements."""

from __future__ import annotations

import torch.nn as nn
from torch import Tensor

from distillery.models.output import ModelOutput


class Distiller(nn.Module):
    """One distillation method: turns student and teacher outputs into weighted loss terms.

    Subclasses set ``teacher_outputs`` (the ModelOutput fields they read from the teacher: the teacher-output
    cache and the checks of equal dimensions rely on it; empty = the method needs no teacher), build their
    connectors in ``setup`` from probed shapes, and return ``{"kd": kd_weight * loss}`` (or several named terms)
    from ``forward``. Trainable connector parameters are ordinary submodules: the trainer optimises them with
    the student.
    """

    teacher_outputs: tuple[str, ...] = ("embedding",)
    needs_equal_embedding_dims: bool = False
    # Multi-teacher methods (whiten_mtd): the trainer is given one network per name in ``self.teachers`` and
    # ``forward`` receives a list of teacher outputs in that order. ``two_views``: student and teacher outputs
    # come as (view 1, view 2) pairs of one KD batch; ``shared_view``: the teachers see the student's tensors.
    # ``task_loss = False``: the trainer adds no CE / triplet term (and draws no identity batch).
    multi_teacher: bool = False
    two_views: bool = False
    shared_view: bool = False
    task_loss: bool = True

    def __init__(self, kd_weight: float = 1.0):
        super().__init__()
        self.kd_weight = float(kd_weight)

    def setup(self, student_shapes: dict, teacher_shapes: dict) -> None:
        """Build connectors once the shapes of both networks' outputs are known (default: none)."""
        if self.needs_equal_embedding_dims and teacher_shapes:
            ds, dt = student_shapes["embedding"][-1], teacher_shapes["embedding"][-1]
            if ds != dt:
                raise ValueError(f"method {self.method_name!r} needs equal student and teacher embedding dims, got "
                                 f"{ds} vs {dt}; set student.embedding_dim: {dt} (or use a method with a connector)")

    def bind_teacher(self, teacher: nn.Module) -> None:
        """Called by the trainer with the frozen teacher (eval mode) after ``setup``, for methods that run part
        of the teacher themselves (UGD: its head on local features). Keep it out of the submodules, so that
        it is neither optimised nor saved with the distiller. Default: nothing."""

    @property
    def method_name(self) -> str:
        return getattr(self, "registered_name", type(self).__name__.lower())

    @property
    def uses_teacher(self) -> bool:
        return bool(self.teacher_outputs)

    def forward(self, student: ModelOutput, teacher: ModelOutput | None, target: Tensor) -> dict[str, Tensor]:
        raise NotImplementedError
