"""S2SD (Roth et al. 2021): simultaneous similarity-based self-distillation for deep metric learning.

The network itself is the student (its embedding is the *source*); high-dimensional *target* branches (2-layer
MLPs on the pooled backbone feature) are trained alongside with their own DML losses and distil their batch
similarity matrices into the source. No teacher network: ``teacher_outputs = ()``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from distillery.losses.base import Distiller
from distillery.data import streams
from distillery.losses.dml._sampling import epoch_generator_seed
from distillery.losses.dml.criteria import build_criterion, check_criterion
from distillery.losses.functional import similarity_kl_loss
from distillery.losses.registry import register_method

STREAM_S2SD_MINING = streams.S2SD_MINING


def target_branch(in_dim: int, out_dim: int) -> nn.Sequential:
    """Linear(in, out) -> ReLU -> Linear(out, out), PyTorch default init (official ``target_nets[i]``)."""
    return nn.Sequential(nn.Linear(in_dim, out_dim), nn.ReLU(), nn.Linear(out_dim, out_dim))


def branch_features(student, pool_aggr: bool) -> Tensor:
    """B x C input of the target branches: ``pooled`` (global average of the last map, official
    ``avg_features``), or with ``pool_aggr`` global-avg + global-max of the last map (element-wise **sum**)."""
    if not pool_aggr:
        return student.pooled.flatten(1)
    last = student.feats[-1]
    return last.mean(dim=(2, 3)) + last.amax(dim=(2, 3))


@register_method("s2sd")
class S2SD(Distiller):
    """The official S2SD criterion (s2sd_dml.md section 3.1), one forward pass of the task batch:

    e = norm(embedding); L_src = source(e, y); for each target dim t_k: z_k = norm(MLP_k(f)) with f =
    :func:`branch_features` (not detached: the target losses train the backbone), L_k = target_k(z_k, y),
    KL_k = similarity_kl_loss(e, z_k, T) (target matrix detached). Terms returned (their sum is the official
    loss): ``dml`` = (mean_k L_k + L_src) / 2, ``kd`` = kd_weight * mean_k KL_k and, with ``feat_distill`` once
    ``feat_distill_delay`` training iterations have run, ``feat_kd`` = feat_weight * similarity_kl_loss(e,
    f.detach(), T).

    Hyper-parameters (official flag): kd_weight = w (``--loss_s2sd_w``), temperature = T, target_dims,
    source / target = criterion names of :data:`~distillery.losses.dml.EMBEDDING_CRITERIA` (each branch and
    the source get their own instance: a margin criterion has its own β vector per branch), pool_aggr,
    feat_distill, feat_weight = feat_w, feat_distill_delay (in iterations). Defaults are parameters.py's; the
    official recipes set pool_aggr (CUB, Cars) and feat_distill on.

    The source criterion is the method's task loss (``task_loss = "none"``: the trainer adds no other).
    The iteration counter counts training-mode forward calls; ``on_epoch_start`` resets it to the run's step
    count, so a resumed run switches feature distillation on at the same step (official: not checkpointed).
    Deviation: semi-hard mining is accepted (the official code raises a KeyError for it under S2SD).
    """

    teacher_outputs = ()
    task_loss = "none"

    def __init__(self, kd_weight: float = 50.0, temperature: float = 1.0,
                 target_dims: Sequence[int] = (512, 1024, 1536, 2048), source: str = "multisimilarity",
                 target: str = "multisimilarity", pool_aggr: bool = False, feat_distill: bool = False,
                 feat_weight: float = 50.0, feat_distill_delay: int = 1000):
        super().__init__(kd_weight)
        dims = list(target_dims) if isinstance(target_dims, (list, tuple)) else None
        if not dims or any(isinstance(d, bool) or not isinstance(d, int) or d < 1 for d in dims):
            raise ValueError(f"s2sd target_dims must be a non-empty list of positive integers, got {target_dims!r}")
        if temperature <= 0:
            raise ValueError(f"s2sd temperature must be > 0, got {temperature!r}")
        if feat_weight < 0 or feat_distill_delay < 0:
            raise ValueError("s2sd feat_weight and feat_distill_delay must be >= 0")
        self.source, self.target = check_criterion(source, "s2sd source"), check_criterion(target, "s2sd target")
        self.temperature, self.target_dims = float(temperature), dims
        self.pool_aggr, self.feat_distill = bool(pool_aggr), bool(feat_distill)
        self.feat_weight, self.feat_distill_delay = float(feat_weight), int(feat_distill_delay)
        self.iter_count = 0
        self.generator = torch.Generator()
        self.target_nets: nn.ModuleList | None = None
        self.target_criteria: nn.ModuleList | None = None
        self.source_criterion: nn.Module | None = None

    def setup(self, student_shapes: dict, teacher_shapes: dict) -> None:
        super().setup(student_shapes, teacher_shapes)
        in_dim = student_shapes["feats"][-1][1] if self.pool_aggr else student_shapes["pooled"][-1]
        logits = student_shapes.get("logits")
        n_classes = student_shapes.get("num_classes") or (logits[-1] if logits is not None else None)
        self.target_nets = nn.ModuleList([target_branch(in_dim, t) for t in self.target_dims])
        self.target_criteria = nn.ModuleList([build_criterion(self.target, n_classes=n_classes,
                                                              generator=self.generator) for _ in self.target_dims])
        self.source_criterion = build_criterion(self.source, n_classes=n_classes, generator=self.generator)

    def on_epoch_start(self, epoch, *, step=0, seed=0):
        self.iter_count = int(step)
        self.generator.manual_seed(epoch_generator_seed(seed, epoch, STREAM_S2SD_MINING))

    def forward(self, student, teacher, target):
        if self.target_nets is None:
            raise RuntimeError("s2sd: call setup(...) before the first forward")
        emb = F.normalize(student.embedding, dim=1)
        source_loss = self.source_criterion(emb, target)
        feats = branch_features(student, self.pool_aggr)
        target_losses, kls = [], []
        for net, criterion in zip(self.target_nets, self.target_criteria):
            branch = F.normalize(net(feats), dim=-1)
            target_losses.append(criterion(branch, target))
            kls.append(similarity_kl_loss(emb, branch, self.temperature))
        terms = {"dml": (torch.stack(target_losses).mean() + source_loss) / 2.0,
                 "kd": self.kd_weight * torch.stack(kls).mean()}
        if self.feat_distill and self.iter_count >= self.feat_distill_delay:
            terms["feat_kd"] = self.feat_weight * similarity_kl_loss(emb, feats.detach(), self.temperature)
        if self.training:
            self.iter_count += 1
        return terms
