"""The distiller interface every method implements."""

from __future__ import annotations

import numpy as np
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
    Hooks used by the classification trainer (``engine/classification.py``; the retrieval trainer calls only
    ``setup`` and ``bind_teacher``):

    - ``ce_weight``: weight of the cross-entropy on the student's logits (mdistiller's per-method
      ``CE_WEIGHT``; KD uses 0.1). The retrieval recipe takes its CE weight from ``training.ce_weight``.
    - ``set_epoch(epoch)``: called at the start of every epoch with the 1-based epoch (warm-ups, seeded
      sampling). Before any call ``epoch`` is None and warm-up factors are 1.
    - ``bind_data(labels, seed)``: the training labels (positions = the ``index`` passed to ``forward``), for
      methods with per-sample state (CRD memory banks).
    - ``needs_sample_index``: ``forward`` then receives ``index=`` (LongTensor B, positions in the train set).
    - ``teacher_train_mode``: run the frozen teacher in train mode (batch-statistics BN), as mdistiller's OFD.
    - ``make_optimizer(params, recipe)``: a method-specific optimizer (DOT) or None for plain SGD.
    """

    teacher_outputs: tuple[str, ...] = ("embedding",)
    student_outputs: tuple[str, ...] = ()  # student fields read beyond teacher_outputs (gathered when distributed)
    needs_equal_embedding_dims: bool = False
    task_loss: str | None = None
    needs_sample_index: bool = False
    teacher_train_mode: bool = False
    # Multi-teacher methods (whiten_mtd): the trainer is given one network per name in ``self.teachers`` and
    # ``forward`` receives a list of teacher outputs in that order. ``two_views``: student and teacher outputs
    # come as (view 1, view 2) pairs of one KD batch; ``shared_view``: the teachers see the student's tensors.
    multi_teacher: bool = False
    two_views: bool = False
    shared_view: bool = False

    def __init__(self, kd_weight: float = 1.0, ce_weight: float = 1.0):
        super().__init__()
        self.kd_weight = float(kd_weight)
        self.ce_weight = float(ce_weight)
        self.epoch: int | None = None

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
    def bind_data(self, labels: np.ndarray, seed: int = 0) -> None:
        """Called by the classification trainer after ``bind_teacher`` with the training labels. Default: nothing."""

    def set_epoch(self, epoch: int) -> None:
        """Called by the classification trainer at the start of every epoch (1-based)."""
        self.epoch = int(epoch)

    def warmup_factor(self, warmup_epochs: float) -> float:
        """mdistiller's loss warm-up ``min(epoch / warmup_epochs, 1)`` with the 1-based epoch (epoch 1 of 20 ->
        0.05); 1 when no epoch was set or ``warmup_epochs`` <= 0."""
        if self.epoch is None or warmup_epochs <= 0:
            return 1.0
        return min(self.epoch / warmup_epochs, 1.0)

    def make_optimizer(self, params, recipe):
        """A method-specific optimizer over ``params`` for the classification ``recipe``, or None (plain SGD)."""
        return None

    @property
    def method_name(self) -> str:
        return getattr(self, "registered_name", type(self).__name__.lower())

    @property
    def uses_teacher(self) -> bool:
        return bool(self.teacher_outputs)

    def forward(self, student: ModelOutput, teacher: ModelOutput | None, target: Tensor) -> dict[str, Tensor]:
        raise NotImplementedError
