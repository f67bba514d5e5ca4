"""The task loss of a training run (``training.task_loss``, or a method's own ``task_loss``).

``ce_triplet`` is D3still's recipe (the default: the retrieval benchmark is unchanged); every name of
:data:`distillery.losses.dml.EMBEDDING_CRITERIA` selects that DML criterion (loss + miner + distance), applied
to the L2-normalised embedding as the S2SD code base does (its networks normalise their output). ``none``
(only as a method's override) adds no task term: the method computes its own (S2SD's source criterion).
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from distillery.data import streams
from distillery.losses.dml._sampling import epoch_generator_seed
from distillery.losses.dml.criteria import EMBEDDING_CRITERIA, build_criterion
from distillery.losses.functional import triplet_loss
from distillery.models.output import ModelOutput

TASK_LOSSES = ("ce_triplet", *EMBEDDING_CRITERIA)
"""Valid values of ``training.task_loss``."""

STREAM_TASK_MINING = streams.TASK_MINING


class TaskLoss(nn.Module):
    """``task(out, target) -> {term name: weighted 0-d tensor}``; ``on_epoch_start`` reseeds mining draws."""

    def on_epoch_start(self, epoch: int, *, step: int = 0, seed: int = 0) -> None:
        """Called by the trainer before each epoch (default: nothing to do)."""

    def forward(self, out: ModelOutput, target: Tensor) -> dict[str, Tensor]:
        raise NotImplementedError


class NoTaskLoss(TaskLoss):
    """No task term (the method brings its own)."""

    def forward(self, out, target):
        return {}


class CETripletLoss(TaskLoss):
    """D3still: ``ce`` = ce_weight * CE(logits, label smoothing), ``triplet`` = triplet_weight * batch-hard/soft
    triplet on the pooled feature (not normalised); a zero weight drops its term."""

    def __init__(self, label_smoothing: float = 0.1, ce_weight: float = 1.0, triplet_weight: float = 1.0,
                 triplet_margin: float | None = 0.3, triplet_mining: str = "batch_hard"):
        super().__init__()
        self.label_smoothing, self.ce_weight, self.triplet_weight = label_smoothing, ce_weight, triplet_weight
        self.triplet_margin, self.triplet_mining = triplet_margin, triplet_mining

    def forward(self, out, target):
        terms = {}
        if self.ce_weight:
            if out.logits is None:
                raise ValueError("task_loss ce_triplet needs logits, the network has no classifier; pick a DML "
                                 f"task loss ({', '.join(EMBEDDING_CRITERIA)}) or a model with num_classes")
            terms["ce"] = self.ce_weight * F.cross_entropy(out.logits, target, label_smoothing=self.label_smoothing)
        if self.triplet_weight:
            terms["triplet"] = self.triplet_weight * triplet_loss(out.pooled, target, margin=self.triplet_margin,
                                                                  mining=self.triplet_mining, normalize=False)
        return terms


class EmbeddingTaskLoss(TaskLoss):
    """``{name: criterion(normalize(embedding), target)}`` with one DML criterion (weight 1); its miner draws
    from a generator reseeded from (seed, epoch) at every epoch start."""

    def __init__(self, name: str, num_classes: int | None = None):
        super().__init__()
        self.name = name
        self.generator = torch.Generator()
        self.criterion = build_criterion(name, n_classes=num_classes, generator=self.generator)

    def on_epoch_start(self, epoch, *, step=0, seed=0):
        self.generator.manual_seed(epoch_generator_seed(seed, epoch, STREAM_TASK_MINING))

    def forward(self, out, target):
        return {self.name: self.criterion(F.normalize(out.embedding, dim=1), target)}


def build_task_loss(name: str, *, num_classes: int | None = None, label_smoothing: float = 0.1,
                    ce_weight: float = 1.0, triplet_weight: float = 1.0, triplet_margin: float | None = 0.3,
                    triplet_mining: str = "batch_hard") -> TaskLoss:
    """The task loss ``name`` (TASK_LOSSES or ``none``); the CE/triplet options only concern ``ce_triplet``,
    ``num_classes`` (training classes) only the margin criterion's per-class β."""
    if name == "none":
        return NoTaskLoss()
    if name == "ce_triplet":
        return CETripletLoss(label_smoothing, ce_weight, triplet_weight, triplet_margin, triplet_mining)
    if name not in EMBEDDING_CRITERIA:
        raise ValueError(f"unknown task loss {name!r} (valid: {', '.join(TASK_LOSSES)})")
    return EmbeddingTaskLoss(name, num_classes)
