"""The retrieval training loop (D3still recipe), shared by the teacher and every distillation method.

One step: CE (label smoothing) on the student's logits + triplet on its pooled feature, both on a P x K
identity batch at the student view; plus, when the method uses a teacher, the method's weighted terms on a
separate shuffled KD batch that the student sees at its own view and the frozen teacher at the teacher view
(two independent augmentations). An epoch stops at the shorter of the two batch lists.

Multi-teacher methods (``distiller.multi_teacher``, e.g. whiten_mtd) get a list of frozen teachers: each KD
batch is seen in one or two student views (``distiller.two_views``; two separate student forwards, so BN
statistics are per view) and by every teacher in the same views (the student's tensors if
``distiller.shared_view``, else the same images and random draws at each teacher's own view spec). A method
with ``task_loss = False`` trains on its terms alone (no CE / triplet, no identity batch).

Every random choice (batches, views) is a function of (seed, epoch), so an interrupted run that resumes from
the last epoch checkpoint reproduces the uninterrupted run bit for bit on CPU.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from tqdm import tqdm

from distillery.data.samplers import identity_batches, shuffled_batches
from distillery.data.transforms import ViewSpec, train_views
from distillery.engine.checkpoint import load_checkpoint, save_checkpoint
from distillery.engine.schedule import warmup_cosine_lr
from distillery.losses.base import Distiller
from distillery.losses.functional import triplet_loss
from distillery.models.shapes import probe_shapes

STREAM_IDENTITY, STREAM_KD_STUDENT, STREAM_KD_TEACHER = 0, 1, 2
STREAM_VIEW_1, STREAM_VIEW_2 = 3, 4  # the two views of a multi-teacher KD batch (student and teachers alike)


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; the message names the step, the loss terms and the last checkpoint."""


@dataclass
class TrainData:
    """Training images (uint8 N x H x W x C, usually a memmap), the rows to train on and their labels."""

    images: np.ndarray
    rows: np.ndarray
    labels: np.ndarray  # contiguous 0..C-1, aligned with rows

    @classmethod
    def from_split(cls, images, rows, raw_labels):
        _, labels = np.unique(raw_labels, return_inverse=True)
        return cls(images, np.asarray(rows), labels.astype(np.int64))

    @property
    def num_classes(self) -> int:
        return int(self.labels.max()) + 1


@dataclass
class Recipe:
    """Optimisation and loss settings of one training run (params.yaml ``teacher`` or ``training``)."""

    epochs: int
    lr: float
    warmup_epochs: int = 0
    cosine_start: int = 0
    weight_decay: float = 5e-4
    momentum: float = 0.9
    ids_per_batch: int = 16
    samples_per_id: int = 6
    kd_batch_size: int = 256
    label_smoothing: float = 0.1
    triplet_margin: float | None = 0.3
    triplet_mining: str = "batch_hard"
    ce_weight: float = 1.0
    triplet_weight: float = 1.0
    grad_clip: float | None = None

    @classmethod
    def from_params(cls, group: dict) -> "Recipe":
        names = cls.__dataclass_fields__
        return cls(**{k: v for k, v in group.items() if k in names})


@dataclass
class TrainResult:
    history: list[dict] = field(default_factory=list)
    seconds: float = 0.0
    resumed_from_epoch: int = 0


def _task_loss(out, target, recipe: Recipe) -> dict[str, torch.Tensor]:
    terms = {}
    if recipe.ce_weight:
        terms["ce"] = recipe.ce_weight * F.cross_entropy(out.logits, target, label_smoothing=recipe.label_smoothing)
    if recipe.triplet_weight:
        terms["triplet"] = recipe.triplet_weight * triplet_loss(out.pooled, target, margin=recipe.triplet_margin,
                                                                mining=recipe.triplet_mining, normalize=False)
    return terms


def _check_finite(loss, terms, epoch, step, checkpoint_path):
    if not torch.isfinite(loss):
        detail = ", ".join(f"{k}={v.item():.4g}" for k, v in terms.items())
        last = f"last good checkpoint: {checkpoint_path} (epoch {epoch})" if Path(checkpoint_path).exists() \
            else "no checkpoint was written yet"
        raise TrainingDiverged(f"loss is {loss.item()} at epoch {epoch + 1}, step {step + 1} ({detail}); {last}; "
                               f"lower the learning rate or the method's kd_weight")


def _multi_teacher_terms(model, teachers, views_t, distiller, images, rows, view_s, seed, epoch, device, target):
    """The multi-teacher method's terms on one KD batch: student and every teacher in the same view(s)."""
    streams = (STREAM_VIEW_1, STREAM_VIEW_2) if distiller.two_views else (STREAM_KD_STUDENT,)
    outs_s, outs_t = [], [[] for _ in teachers]
    for stream in streams:
        xs = train_views(images, rows, view_s, seed=seed, stream=stream, view=epoch).to(device)
        outs_s.append(model(xs))
        with torch.no_grad():
            for k, (net, spec) in enumerate(zip(teachers, views_t)):
                xt = xs if distiller.shared_view else \
                    train_views(images, rows, spec, seed=seed, stream=stream, view=epoch).to(device)
                outs_t[k].append(net(xt))
    pack = tuple if distiller.two_views else (lambda outs: outs[0])
    return distiller(pack(outs_s), [pack(o) for o in outs_t], target)


def train(model: nn.Module, data: TrainData, recipe: Recipe, view_s: ViewSpec, *, seed: int,
          checkpoint_path, distiller: Distiller | None = None, teacher: nn.Module | None = None,
          view_t: ViewSpec | None = None, device=torch.device("cpu"), progress: bool = True,
          desc: str = "train", stop_after_steps: int | None = None, teachers: list[nn.Module] | None = None,
          views_t: list[ViewSpec] | None = None) -> TrainResult:
    """Train ``model`` (in place) and write an atomic checkpoint after every epoch.

    Single-teacher methods take ``teacher`` / ``view_t``; multi-teacher methods take ``teachers`` / ``views_t``
    (one per name in ``distiller.teachers``, same order).
    If ``checkpoint_path`` holds a checkpoint of this run, training resumes after its last finished epoch.
    ``stop_after_steps`` (tests only) stops the run abruptly after that many optimisation steps.
    """
    checkpoint_path = Path(checkpoint_path)
    uses_teacher = distiller is not None and distiller.uses_teacher
    multi = uses_teacher and distiller.multi_teacher
    uses_task = distiller is None or distiller.task_loss
    if multi and (not teachers or views_t is None or len(teachers) != len(distiller.teachers)
                  or len(views_t) != len(teachers)):
        raise ValueError(f"a multi-teacher method needs `teachers` and `views_t`, one per teacher name "
                         f"{list(distiller.teachers)}")
    if uses_teacher and not multi and (teacher is None or view_t is None):
        raise ValueError("a distillation method that uses a teacher needs `teacher` and `view_t`")
    frozen = (teachers if multi else [teacher]) if uses_teacher else []
    model.to(device)
    if distiller is not None:
        distiller.to(device)
        channels = data.images.shape[-1]
        shapes_s = probe_shapes(model, (channels, view_s.resolution, view_s.resolution))
        if multi:
            shapes_t = [probe_shapes(t, (channels, v.resolution, v.resolution)) for t, v in zip(teachers, views_t)]
        else:
            shapes_t = probe_shapes(teacher, (channels, view_t.resolution, view_t.resolution)) if uses_teacher else {}
        distiller.setup(shapes_s, shapes_t)
        distiller.to(device)
    for net in frozen:
        net.to(device).eval()
        for p in net.parameters():
            p.requires_grad_(False)
    if uses_teacher and not multi:
        distiller.bind_teacher(teacher)
    params = list(model.parameters()) + (list(distiller.parameters()) if distiller is not None else [])
    optimizer = torch.optim.SGD(params, lr=recipe.lr, momentum=recipe.momentum, weight_decay=recipe.weight_decay)

    result, start_epoch = TrainResult(), 0
    if checkpoint_path.exists():
        state = load_checkpoint(checkpoint_path)
        model.load_state_dict(state["model"])
        if distiller is not None and state.get("distiller"):
            distiller.load_state_dict(state["distiller"])
        optimizer.load_state_dict(state["optimizer"])
        start_epoch, result.history = state["epoch"], state["history"]
        result.seconds, result.resumed_from_epoch = state.get("seconds", 0.0), start_epoch

    steps_done = 0
    for epoch in range(start_epoch, recipe.epochs):
        t0 = time.perf_counter()
        lr = warmup_cosine_lr(epoch, recipe.lr, recipe.epochs, recipe.warmup_epochs, recipe.cosine_start)
        for group in optimizer.param_groups:
            group["lr"] = lr
        id_batches = identity_batches(data.labels, recipe.ids_per_batch, recipe.samples_per_id, seed=seed,
                                      epoch=epoch) if uses_task else None
        kd_batches = shuffled_batches(len(data.rows), recipe.kd_batch_size, seed=seed, epoch=epoch) if uses_teacher else None
        n_steps = min((len(b) for b in (id_batches, kd_batches) if b is not None), default=0)
        if n_steps == 0:
            raise ValueError(f"an epoch has no full batch: {len(data.rows)} training images are fewer than a batch; "
                             f"lower ids_per_batch/samples_per_id or kd_batch_size")
        model.train()
        if distiller is not None:
            distiller.train()
        sums: dict[str, float] = {}
        bar = tqdm(range(n_steps), desc=f"{desc} epoch {epoch + 1}/{recipe.epochs}", disable=not progress,
                   leave=False, mininterval=1)
        for step in bar:
            terms = {}
            if uses_task:
                pos = id_batches[step]
                rows = data.rows[pos]
                target = torch.as_tensor(data.labels[pos], device=device)
                x = train_views(data.images[rows], rows, view_s,
                                seed=seed, stream=STREAM_IDENTITY, view=epoch).to(device)
                terms = _task_loss(model(x), target, recipe)
            if multi:
                kd_rows = data.rows[kd_batches[step]]
                kd_target = torch.as_tensor(data.labels[kd_batches[step]], device=device)
                terms.update(_multi_teacher_terms(model, teachers, views_t, distiller, data.images[kd_rows], kd_rows,
                                                  view_s, seed, epoch, device, kd_target))
            elif uses_teacher:
                kd_pos = kd_batches[step]
                kd_rows = data.rows[kd_pos]
                kd_images = data.images[kd_rows]
                xs = train_views(kd_images, kd_rows, view_s, seed=seed, stream=STREAM_KD_STUDENT, view=epoch).to(device)
                xt = train_views(kd_images, kd_rows, view_t, seed=seed, stream=STREAM_KD_TEACHER, view=epoch).to(device)
                with torch.no_grad():
                    out_t = teacher(xt)
                kd_target = torch.as_tensor(data.labels[kd_pos], device=device)
                terms.update(distiller(model(xs), out_t, kd_target))
            loss = sum(terms.values())
            _check_finite(loss, terms, epoch, step, checkpoint_path)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if recipe.grad_clip:
                torch.nn.utils.clip_grad_norm_(params, recipe.grad_clip)
            optimizer.step()
            for k, v in {"loss": loss, **terms}.items():
                sums[k] = sums.get(k, 0.0) + float(v.detach())
            bar.set_postfix(loss=f"{sums['loss'] / (step + 1):.3f}", refresh=False)
            steps_done += 1
            if stop_after_steps is not None and steps_done >= stop_after_steps:
                raise KeyboardInterrupt(f"stopped after {steps_done} steps (test hook)")
        seconds = time.perf_counter() - t0
        result.seconds += seconds
        record = {"epoch": epoch + 1, "lr": lr, "steps": n_steps, "seconds": round(seconds, 3),
                  **{k: v / n_steps for k, v in sums.items()}}
        result.history.append(record)
        if progress:
            tqdm.write(f"{desc} epoch {epoch + 1}/{recipe.epochs}: " +
                       " ".join(f"{k}={v:.4f}" for k, v in record.items() if k not in ("epoch", "steps")))
        save_checkpoint(checkpoint_path, {
            "model": model.state_dict(), "distiller": distiller.state_dict() if distiller is not None else None,
            "optimizer": optimizer.state_dict(), "epoch": epoch + 1, "history": result.history,
            "seconds": result.seconds})
    return result
