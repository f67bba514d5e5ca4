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

    Methods without a teacher (``teacher_outputs = ()``) that return terms (self-distillation, S2SD) are called
    by the trainer on the student's output of the task batch, with ``teacher=None``. ``task_loss`` names the
    task loss the method trains with (``distillery.losses.task``); None = the recipe's ``training.task_loss``,
    ``"none"`` = no task term (the method computes its own).
    """

    teacher_outputs: tuple[str, ...] = ("embedding",)
    student_outputs: tuple[str, ...] = ()  # student fields read beyond teacher_outputs (gathered when distributed)
    needs_equal_embedding_dims: bool = False
    task_loss: str | None = None

    def __init__(self, kd_weight: float = 1.0):
        super().__init__()
        self.kd_weight = float(kd_weight)

    def setup(self, student_shapes: dict, teacher_shapes: dict) -> None:
        """Build connectors once the shapes of both networks' outputs are known (default: none).

        The shapes are ``probe_shapes`` dicts; the trainer adds ``student_shapes["num_classes"]``, the number
        of training classes (for per-class parameters such as the margin loss's β)."""
        if self.needs_equal_embedding_dims and teacher_shapes:
            ds, dt = student_shapes["embedding"][-1], teacher_shapes["embedding"][-1]
            if ds != dt:
                raise ValueError(f"method {self.method_name!r} needs equal student and teacher embedding dims, got "
                                 f"{ds} vs {dt}; set student.embedding_dim: {dt} (or use a method with a connector)")

    def bind_teacher(self, teacher: nn.Module) -> None:
        """Called by the trainer with the frozen teacher (eval mode) after ``setup``, for methods that run part
        of the teacher themselves (UGD: its head on local features). Keep it out of the submodules, so that
        it is neither optimised nor saved with the distiller. Default: nothing."""

    def on_epoch_start(self, epoch: int, *, step: int = 0, seed: int = 0) -> None:
        """Called by the trainer before every epoch (0-based ``epoch``; ``step`` = optimisation steps done
        before it over the whole run, also after a resume; ``seed`` = the run's seed), for methods whose loss
        depends on training progress or that draw random numbers. Default: nothing."""

    @property
    def method_name(self) -> str:
        return getattr(self, "registered_name", type(self).__name__.lower())

    @property
    def uses_teacher(self) -> bool:
        return bool(self.teacher_outputs)

    def forward(self, student: ModelOutput, teacher: ModelOutput | None, target: Tensor) -> dict[str, Tensor]:
        raise NotImplementedError
