"""Whiten-MTD: label-free multi-teacher similarity distillation with PCA-whitened teachers (whiten_mtd.md §3).

Each teacher's embedding goes through its own frozen PCA-whitening layer (fitted offline on the teacher's
training embeddings: stage ``whitening``); the student's and the fused teachers' cross-view cosine-similarity
matrices are matched by :func:`~distillery.losses.functional.whitened_similarity_loss`. No label loss.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn as nn

from distillery.losses.base import Distiller
from distillery.losses.functional import whitened_similarity_loss
from distillery.losses.math.whiten_mtd import STRATEGIES
from distillery.losses.registry import register_method
from distillery.models.output import ModelOutput


def _views(out) -> tuple[ModelOutput, ModelOutput | None]:
    """(view 1, view 2) of one network's outputs: a ModelOutput is one view (view 2 = None, "same view")."""
    if isinstance(out, ModelOutput):
        return out, None
    if isinstance(out, tuple) and len(out) == 2 and all(isinstance(o, ModelOutput) for o in out):
        return out
    raise TypeError(f"expected a ModelOutput or a (view 1, view 2) tuple of ModelOutputs, got {type(out).__name__}")


@register_method("whiten_mtd")
class WhitenMTD(Distiller):
    """kd_weight · whitened_similarity_loss(student views, whitened teacher views).

    ``forward(student, teachers, target)``: ``student`` is a ModelOutput or a (view 1, view 2) tuple;
    ``teachers`` is a list with one entry per name in ``teachers`` (same order), each a ModelOutput or a
    (view 1, view 2) tuple (a bare ModelOutput is accepted for a single teacher). The ``embedding`` field is
    used on both sides. With ``whiten`` the k-th teacher embedding goes through the k-th layer given to
    :meth:`set_whitening` (L2, centre, project; no L2 after: the loss normalises). ``target`` is unused.

    Hyper-parameters: ``teachers`` (teacher names: ``teacher`` = params ``teacher``, others = keys of params
    ``teachers``), ``whiten`` (false: the raw teacher embeddings, the ablation), ``strategy`` (``mean``,
    ``maxmin``, ``maxmean``, ``maxfix``), ``temp_student`` / ``temp_teacher`` (τs, τt), ``shared_view`` (true:
    the teachers see exactly the student's tensors, as the official code; false: the same images, flips and
    crops drawn from the same stream, but each teacher at its own view spec, e.g. resolution).

    Under DDP the trainer hands over the global batch (``distributed.gather_outputs``: every rank's
    embeddings, with gradient for the local slice), so every rank computes the full-batch loss. The official
    code gathers the L2-normalised tensors, keeps only the local slice's gradient and multiplies the loss by
    the world size; our ``all_gather_with_grad`` sums the slice's gradient over ranks instead, which gives the
    same (full-batch) gradient after DDP's averaging, so no factor is applied here (the official logs W·L).
    Gathering before the L2 normalisation is the same as after it (row-wise). Omitted: the official
    ``pos_win_count`` buffer (logging only).

    Pipeline differences from the official recipe (whiten_mtd.md 6): the optimiser and schedule are the
    pipeline's ``training`` recipe (SGD, per-epoch warm-up + cosine), not Adam(1e-3, wd 1e-6) with a
    per-iteration cosine; a view pair is two augmentations of one image (the SVD recipe), not two images of
    one GLDv2 landmark; the teachers' DELG/DOLG BGR swap does not apply (teachers come from the model zoo).
    """

    multi_teacher = True
    two_views = True
    task_loss = "none"

    def __init__(self, kd_weight: float = 1.0, teachers: Sequence[str] = ("teacher",), whiten: bool = True,
                 strategy: str = "maxmin", temp_student: float = 0.05, temp_teacher: float = 0.05,
                 shared_view: bool = True):
        super().__init__(kd_weight)
        if isinstance(teachers, str) or not teachers or not all(isinstance(t, str) for t in teachers):
            raise ValueError(f"teachers must be a non-empty list of teacher names, got {teachers!r}")
        if len(set(teachers)) != len(teachers):
            raise ValueError(f"teachers must not repeat a name, got {list(teachers)}")
        if strategy not in STRATEGIES:
            raise ValueError(f"unknown strategy {strategy!r}; valid strategies: {', '.join(STRATEGIES)}")
        if not (temp_student > 0 and temp_teacher > 0):
            raise ValueError(f"temperatures must be > 0, got {temp_student}, {temp_teacher}")
        self.teachers = tuple(teachers)
        self.whiten = bool(whiten)
        self.strategy = strategy
        self.temp_student, self.temp_teacher = float(temp_student), float(temp_teacher)
        self.shared_view = bool(shared_view)
        self.whitenings = nn.ModuleList()

    def set_whitening(self, layers: Sequence[nn.Module]) -> None:
        """The frozen whitening layer of each teacher (``WhiteningLayer``), in ``teachers`` order. Buffers only:
        nothing is optimised; they travel with ``.to(device)`` and the distiller's state dict."""
        if len(layers) != len(self.teachers):
            raise ValueError(f"got {len(layers)} whitening layers for {len(self.teachers)} teachers")
        self.whitenings = nn.ModuleList(layers)
        for p in self.whitenings.parameters():
            p.requires_grad_(False)

    def _teacher_embedding(self, k: int, out: ModelOutput | None) -> torch.Tensor | None:
        if out is None:
            return None
        return self.whitenings[k](out.embedding) if self.whiten else out.embedding

    def forward(self, student, teachers, target=None):
        teachers = [teachers] if isinstance(teachers, ModelOutput) else list(teachers)
        if len(teachers) != len(self.teachers):
            raise ValueError(f"whiten_mtd has {len(self.teachers)} teachers {list(self.teachers)} but got "
                             f"{len(teachers)} teacher outputs")
        if self.whiten and len(self.whitenings) != len(self.teachers):
            raise RuntimeError("whiten_mtd with whiten: true needs each teacher's whitening layer: call "
                               "set_whitening (the pipeline loads them from the whitening stages)")
        s1, s2 = _views(student)
        pairs = [_views(t) for t in teachers]
        if (s2 is None) != any(v2 is None for _, v2 in pairs) or len({v2 is None for _, v2 in pairs}) > 1:
            raise ValueError("student and every teacher must give the same number of views (1 or 2)")
        e_s1, e_s2 = s1.embedding, None if s2 is None else s2.embedding
        e_t1 = [self._teacher_embedding(k, v1) for k, (v1, _) in enumerate(pairs)]
        e_t2 = None if s2 is None else [self._teacher_embedding(k, v2) for k, (_, v2) in enumerate(pairs)]
        loss = whitened_similarity_loss(e_s1, e_t1, self.strategy, self.temp_student, self.temp_teacher,
                                        emb_s2=e_s2, embs_t2=e_t2)
        return {"kd": self.kd_weight * loss}
