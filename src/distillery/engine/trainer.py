"""The retrieval training loop (D3still recipe), shared by the teacher and every distillation method.

One step: the task loss (``task_loss``; default CE with label smoothing on the student's logits + triplet on
its pooled feature, or one DML criterion on its embedding) on a P x K identity batch (or S2SD's class-balanced
batch) at the student view; plus, when the method uses a teacher, the method's weighted terms on a separate
shuffled KD batch that the student sees at its own view and the frozen teacher at the teacher view (two
independent augmentations). An epoch stops at the shorter of the two batch lists. A method without a teacher
that returns terms (S2SD) gets the student's output of the task batch instead.

Multi-teacher methods (``distiller.multi_teacher``, e.g. whiten_mtd) get a list of frozen teachers: each KD
batch is seen in one or two student views (``distiller.two_views``; two separate student forwards, so BN
statistics are per view) and by every teacher in the same views (the student's tensors if
``distiller.shared_view``, else the same images and random draws at each teacher's own view spec). A method
that uses a teacher and has no task loss (``task_loss = "none"``) draws no task batch at all.

Every random choice (batches, views) is a function of (seed, epoch), so an interrupted run that resumes from
the last epoch checkpoint reproduces the uninterrupted run bit for bit on CPU.

Speed (see ``engine/accel.py``): views are made on the training device from the uploaded uint8 batch, the
teacher runs under ``inference_mode``, optional autocast (``amp``), ``channels_last`` and ``torch.compile``;
on CUDA the loop does not wait for a step's loss (its NaN check and running sums read it one step later).
Distributed (see ``engine/distributed.py``, launched with ``torchrun``): each rank trains on its shard of the
epoch's batch lists with a DDP student; the method sees the KD outputs of the global batch (gathered, with
gradient for the local slice); only rank 0 writes the checkpoint and prints.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
from tqdm import tqdm

from distillery.data import streams
from distillery.data.samplers import class_balanced_batches, identity_batches, one_per_group, shuffled_batches
from distillery.data.transforms import ViewSpec, train_views
from distillery.engine import accel, distributed
from distillery.engine.checkpoint import load_checkpoint, save_checkpoint
from distillery.engine.schedule import warmup_cosine_lr
from distillery.engine.teacher_cache import check_cacheable
from distillery.losses.base import Distiller
from distillery.losses.task import build_task_loss
from distillery.models.shapes import probe_shapes
from distillery.utils.device import to_device

STREAM_IDENTITY, STREAM_KD_STUDENT, STREAM_KD_TEACHER = streams.IDENTITY, streams.KD_STUDENT, streams.KD_TEACHER
STREAM_VIEW_1, STREAM_VIEW_2 = streams.VIEW_1, streams.VIEW_2


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; the message names the step, the loss terms and the last checkpoint."""


@dataclass
class TrainData:
    """Training images (uint8 N x H x W x C, usually a memmap), the rows to train on and their labels.

    ``groups`` (video datasets): the video (0..G-1, frames consecutive) of each row; a KD epoch then sees one
    random frame per video (:meth:`kd_pool`), as whiten_mtd's SVD sampler. Task batches use every row."""

    images: np.ndarray
    rows: np.ndarray
    labels: np.ndarray  # contiguous 0..C-1, aligned with rows
    groups: np.ndarray | None = None

    @classmethod
    def from_split(cls, images, rows, raw_labels, groups=None):
        _, labels = np.unique(raw_labels, return_inverse=True)
        return cls(images, np.asarray(rows), labels.astype(np.int64), groups)

    def kd_pool(self, seed: int, epoch: int) -> np.ndarray:
        """Positions (into ``rows``) that the KD batches of ``epoch`` draw from: all of them, or with ``groups``
        one random frame per video."""
        if self.groups is None:
            return np.arange(len(self.rows))
        return one_per_group(self.groups, seed=seed, epoch=epoch)

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
    amp: str = "none"  # none | bf16 | fp16 (CUDA only; float32 elsewhere)
    channels_last: bool = False
    compile: bool = False
    task_loss: str = "ce_triplet"         # distillery.losses.task.TASK_LOSSES
    sampler: str = "identity"             # identity (P x K) | class_balanced (S2SD: P class draws x K, replacement)
    optimizer: str = "sgd"                # sgd (momentum) | adam (torch defaults; S2SD)
    extra_weight_decay: float | None = None  # weight decay of method/task-loss parameters; None = weight_decay

    @classmethod
    def from_params(cls, group: dict) -> "Recipe":
        names = cls.__dataclass_fields__
        return cls(**{k: v for k, v in group.items() if k in names
                      and not (v is None and k in ("task_loss", "sampler", "optimizer"))})


@dataclass
class TrainResult:
    history: list[dict] = field(default_factory=list)
    seconds: float = 0.0
    resumed_from_epoch: int = 0


def _task_loss_module(recipe: Recipe, distiller: Distiller | None, num_classes: int):
    name = (distiller.task_loss if distiller is not None else None) or recipe.task_loss
    return build_task_loss(name, num_classes=num_classes, label_smoothing=recipe.label_smoothing,
                           ce_weight=recipe.ce_weight, triplet_weight=recipe.triplet_weight,
                           triplet_margin=recipe.triplet_margin, triplet_mining=recipe.triplet_mining)


def _optimizer(recipe: Recipe, model_params: list, extra_params: list) -> torch.optim.Optimizer:
    """SGD (momentum) or Adam over two groups: the network (``weight_decay``) and the method's / task loss's
    parameters (``extra_weight_decay``, default the same)."""
    extra_decay = recipe.weight_decay if recipe.extra_weight_decay is None else recipe.extra_weight_decay
    groups = [{"params": model_params, "weight_decay": recipe.weight_decay}]
    if extra_params:
        groups.append({"params": extra_params, "weight_decay": extra_decay})
    if recipe.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=recipe.lr, momentum=recipe.momentum)
    if recipe.optimizer == "adam":
        return torch.optim.Adam(groups, lr=recipe.lr)
    raise ValueError(f"unknown optimizer {recipe.optimizer!r} (valid: sgd, adam)")


def _task_batches(labels, recipe: Recipe, seed: int, epoch: int) -> list[np.ndarray]:
    if recipe.sampler == "identity":
        return identity_batches(labels, recipe.ids_per_batch, recipe.samples_per_id, seed=seed, epoch=epoch)
    if recipe.sampler == "class_balanced":
        return class_balanced_batches(labels, recipe.ids_per_batch * recipe.samples_per_id, recipe.samples_per_id,
                                      seed=seed, epoch=epoch)
    raise ValueError(f"unknown sampler {recipe.sampler!r} (valid: identity, class_balanced)")


def _check_finite(loss, terms, epoch, step, checkpoint_path):
    if not torch.isfinite(loss):
        detail = ", ".join(f"{k}={v.item():.4g}" for k, v in terms.items())
        last = f"last good checkpoint: {checkpoint_path} (epoch {epoch})" if Path(checkpoint_path).exists() \
            else "no checkpoint was written yet"
        raise TrainingDiverged(f"loss is {loss.item()} at epoch {epoch + 1}, step {step + 1} ({detail}); {last}; "
                               f"lower the learning rate or the method's kd_weight")


class _LossSums:
    """An epoch's sums of the loss terms. Every step's loss is checked for NaN/inf (TrainingDiverged); with
    ``lag`` = 1 (CUDA) a step's values are read one step later, when the GPU has long finished them."""

    def __init__(self, lag: int, epoch: int, checkpoint_path: Path):
        self.lag, self.epoch, self.checkpoint_path = lag, epoch, checkpoint_path
        self.pending: list = []
        self.sums: dict[str, float] = {}
        self.count = 0

    def add(self, step: int, loss: torch.Tensor, terms: dict[str, torch.Tensor]) -> None:
        self.pending.append((step, loss.detach(), {k: v.detach() for k, v in terms.items()}))
        while len(self.pending) > self.lag:
            self._settle(*self.pending.pop(0))

    def _settle(self, step, loss, terms) -> None:
        _check_finite(loss, terms, self.epoch, step, self.checkpoint_path)
        for k, v in {"loss": loss, **terms}.items():
            self.sums[k] = self.sums.get(k, 0.0) + float(v)
        self.count += 1

    def means(self) -> dict[str, float]:
        """Mean of every term over the epoch's steps and over ranks."""
        while self.pending:
            self._settle(*self.pending.pop(0))
        return {k: v / max(self.count, 1) for k, v in distributed.mean_over_ranks(self.sums).items()}


def _multi_teacher_terms(net, teacher_nets, view_s, views_t, distiller, views, kd_images, kd_rows, epoch, amp,
                         device, target):
    """The multi-teacher method's terms on one KD batch: the student and every teacher in the same view(s);
    the ``embedding`` fields of the global batch (gathered, with gradient for the student's local slice)."""
    view_streams = (STREAM_VIEW_1, STREAM_VIEW_2) if distiller.two_views else (STREAM_KD_STUDENT,)
    fields = distiller.teacher_outputs
    outs_s, outs_t = [], [[] for _ in teacher_nets]
    for i, stream in enumerate(view_streams):  # view i: ViewSpec.pair()[i] (whiten_mtd's asymmetric SVD pair)
        xs = views(kd_images, kd_rows, view_s.pair()[i], stream, epoch)
        with accel.autocast(amp, device):
            out_s = net(xs)
        outs_s.append(distributed.gather_outputs(accel.float_outputs(out_s, amp), fields, with_grad=True))
        for k, (teacher_net, spec) in enumerate(zip(teacher_nets, views_t)):
            xt = xs if distiller.shared_view else views(kd_images, kd_rows, spec.pair()[i], stream, epoch)
            out_t = accel.teacher_forward(teacher_net, xt, fields, amp)
            outs_t[k].append(distributed.gather_outputs(out_t, fields, with_grad=False))
    pack = tuple if distiller.two_views else (lambda outs: outs[0])
    return distiller(pack(outs_s), [pack(o) for o in outs_t], target)


def train(model: nn.Module, data: TrainData, recipe: Recipe, view_s: ViewSpec, *, seed: int,
          checkpoint_path, distiller: Distiller | None = None, teacher: nn.Module | None = None,
          view_t: ViewSpec | None = None, device=torch.device("cpu"), progress: bool = True,
          desc: str = "train", stop_after_steps: int | None = None, step_callback=None,
          teachers: list[nn.Module] | None = None, views_t: list[ViewSpec] | None = None,
          teacher_cache=None) -> TrainResult:
    """Train ``model`` (in place) and write an atomic checkpoint after every epoch (rank 0).

    Single-teacher methods take ``teacher`` / ``view_t``; multi-teacher methods take ``teachers`` / ``views_t``
    (one per name in ``distiller.teachers``, same order).
    ``teacher_cache`` (a ``TeacherCache``, single-teacher methods): read the teacher's outputs for the KD batch
    from the recorded views instead of running the teacher (the teacher is still used for shape probing and
    ``bind_teacher``).
    If ``checkpoint_path`` holds a checkpoint of this run, training resumes after its last finished epoch.
    ``stop_after_steps`` (tests only) stops the run abruptly after that many optimisation steps;
    ``step_callback(steps_done)`` (benchmarks) is called after every optimisation step.
    """
    checkpoint_path = Path(checkpoint_path)
    uses_teacher = distiller is not None and distiller.uses_teacher
    self_distills = distiller is not None and not uses_teacher
    multi = uses_teacher and getattr(distiller, "multi_teacher", False)
    if multi and (not teachers or views_t is None or len(teachers) != len(distiller.teachers)
                  or len(views_t) != len(teachers)):
        raise ValueError(f"a multi-teacher method needs `teachers` and `views_t`, one per teacher name "
                         f"{list(distiller.teachers)}")
    if uses_teacher and not multi and (teacher is None or view_t is None):
        raise ValueError("a distillation method that uses a teacher needs `teacher` and `view_t`")
    # a teacher-based method without a task loss trains on its KD batches alone (no task batch is drawn)
    draws_task = not (uses_teacher and (distiller.task_loss or recipe.task_loss) == "none")
    if teacher_cache is not None and uses_teacher:
        if multi:
            raise ValueError("the teacher-output cache holds the main teacher's views; multi-teacher methods run "
                             "their teachers (set teacher_cache.views: 0)")
        check_cacheable(distiller.method_name, distiller.teacher_outputs)
    device = torch.device(device)
    main, progress = distributed.is_main(), progress and distributed.is_main()
    amp = accel.resolve_amp(recipe.amp, device)
    accel.prepare_module(model, device, recipe.channels_last)
    if distiller is not None:
        distiller.to(device)
        channels = data.images.shape[-1]
        if multi:
            shapes_t = [probe_shapes(t, (channels, v.resolution, v.resolution)) for t, v in zip(teachers, views_t)]
        else:
            shapes_t = probe_shapes(teacher, (channels, view_t.resolution, view_t.resolution)) if uses_teacher else {}
        shapes_s = probe_shapes(model, (channels, view_s.resolution, view_s.resolution))
        distiller.setup({**shapes_s, "num_classes": data.num_classes}, shapes_t)
        distiller.to(device)
        distributed.broadcast_module(distiller)
    for frozen in (teachers if multi else [teacher]) if uses_teacher else []:
        accel.prepare_module(frozen, device, recipe.channels_last).eval()
        for p in frozen.parameters():
            p.requires_grad_(False)
    if uses_teacher and not multi:
        distiller.bind_teacher(teacher)
    task = _task_loss_module(recipe, distiller, data.num_classes).to(device)
    extra = (list(distiller.parameters()) if distiller is not None else []) + list(task.parameters())
    params = list(model.parameters()) + extra
    optimizer = _optimizer(recipe, list(model.parameters()), extra)
    scaler = accel.make_scaler(amp, device)

    result, start_epoch = TrainResult(), 0
    if checkpoint_path.exists():
        state = load_checkpoint(checkpoint_path)
        model.load_state_dict(state["model"])
        if distiller is not None and state.get("distiller"):
            distiller.load_state_dict(state["distiller"])
        if state.get("task_loss"):
            task.load_state_dict(state["task_loss"])
        optimizer.load_state_dict(state["optimizer"])
        if state.get("scaler"):
            scaler.load_state_dict(state["scaler"])
        start_epoch, result.history = state["epoch"], state["history"]
        result.seconds, result.resumed_from_epoch = state.get("seconds", 0.0), start_epoch
    net = accel.maybe_compile(distributed.wrap_model(model, device), recipe.compile)
    teacher_net = accel.maybe_compile(teacher, recipe.compile) if uses_teacher and not multi else None
    teacher_nets = [accel.maybe_compile(t, recipe.compile) for t in teachers] if multi else []
    fields_t = distiller.teacher_outputs if uses_teacher else ()
    fields_s = tuple(dict.fromkeys((*fields_t, *distiller.student_outputs))) if uses_teacher else ()
    connector_params = extra  # method connectors and task-loss parameters: averaged by hand under DDP

    def views(images, image_rows, spec, stream, epoch):  # spec None = the student's view
        x = train_views(images, image_rows, spec or view_s, seed=seed, stream=stream, view=epoch, device=device)
        return x.contiguous(memory_format=torch.channels_last) if recipe.channels_last else x

    steps_done = 0
    for epoch in range(start_epoch, recipe.epochs):
        t0 = time.perf_counter()
        lr = warmup_cosine_lr(epoch, recipe.lr, recipe.epochs, recipe.warmup_epochs, recipe.cosine_start)
        for group in optimizer.param_groups:
            group["lr"] = lr
        id_batches = distributed.shard(_task_batches(data.labels, recipe, seed, epoch)) if draws_task else None
        done = sum(record["steps"] for record in result.history)
        task.on_epoch_start(epoch, step=done, seed=seed)
        if distiller is not None:
            distiller.on_epoch_start(epoch, step=done, seed=seed)
        kd_pool = data.kd_pool(seed, epoch) if uses_teacher else None
        kd_batches = distributed.shard([kd_pool[b] for b in shuffled_batches(
            len(kd_pool), recipe.kd_batch_size, seed=seed, epoch=epoch)]) if uses_teacher else None
        n_steps = min((len(b) for b in (id_batches, kd_batches) if b is not None), default=0)
        if n_steps == 0:
            what = "training images" if data.groups is None else "training videos (one frame each per KD epoch)"
            raise ValueError(f"an epoch has no full batch per rank: {len(kd_pool if uses_teacher else data.rows)} "
                             f"{what} are fewer than "
                             f"{distributed.world_size()} rank(s) x a batch; lower ids_per_batch/samples_per_id or "
                             f"kd_batch_size")
        net.train()
        task.train()
        if distiller is not None:
            distiller.train()
        sums = _LossSums(1 if device.type == "cuda" else 0, epoch, checkpoint_path)
        bar = tqdm(range(n_steps), desc=f"{desc} epoch {epoch + 1}/{recipe.epochs}", disable=not progress,
                   leave=False, mininterval=1)
        for step in bar:
            terms = {}
            if draws_task:
                pos = id_batches[step]
                rows = data.rows[pos]
                target = to_device(torch.as_tensor(data.labels[pos]), device)
                x = views(data.images[rows], rows, view_s, STREAM_IDENTITY, epoch)
                with accel.autocast(amp, device):
                    out = net(x)
                out = accel.float_outputs(out, amp)
                terms = task(out, target)
                if self_distills:
                    terms.update(distiller(out, None, target))
            if multi:
                kd_pos = kd_batches[step]
                kd_rows = data.rows[kd_pos]
                kd_images = to_device(torch.as_tensor(np.ascontiguousarray(data.images[kd_rows])), device)
                kd_target = distributed.all_gather(to_device(torch.as_tensor(data.labels[kd_pos]), device))
                terms.update(_multi_teacher_terms(net, teacher_nets, view_s, views_t, distiller, views, kd_images,
                                                  kd_rows, epoch, amp, device, kd_target))
            elif uses_teacher:
                kd_pos = kd_batches[step]
                kd_rows = data.rows[kd_pos]
                kd_images = to_device(torch.as_tensor(np.ascontiguousarray(data.images[kd_rows])), device)
                xs = views(kd_images, kd_rows, view_s, STREAM_KD_STUDENT, epoch)
                if teacher_cache is not None:
                    out_t = teacher_cache.outputs(kd_pos, epoch, device)
                else:
                    xt = views(kd_images, kd_rows, view_t, STREAM_KD_TEACHER, epoch)
                    out_t = accel.teacher_forward(teacher_net, xt, fields_t, amp)
                with accel.autocast(amp, device):
                    out_s = net(xs)
                out_s = distributed.gather_outputs(accel.float_outputs(out_s, amp), fields_s, with_grad=True)
                out_t = distributed.gather_outputs(out_t, fields_t, with_grad=False)
                kd_target = distributed.all_gather(to_device(torch.as_tensor(data.labels[kd_pos]), device))
                terms.update(distiller(out_s, out_t, kd_target))
            loss = sum(terms.values())
            sums.add(step, loss, terms)
            optimizer.zero_grad(set_to_none=True)
            accel.backward(loss, scaler)
            distributed.average_gradients(connector_params)
            accel.clip_and_step(optimizer, scaler, params, recipe.grad_clip)
            if progress and sums.count:
                bar.set_postfix(loss=f"{sums.sums['loss'] / sums.count:.3f}", refresh=False)
            steps_done += 1
            if step_callback is not None:
                step_callback(steps_done)
            if stop_after_steps is not None and steps_done >= stop_after_steps:
                raise KeyboardInterrupt(f"stopped after {steps_done} steps (test hook)")
        distributed.broadcast_module(model)  # DDP syncs weights; BN running statistics drift per rank until here
        seconds = time.perf_counter() - t0
        result.seconds += seconds
        record = {"epoch": epoch + 1, "lr": lr, "steps": n_steps, "seconds": round(seconds, 3), **sums.means()}
        result.history.append(record)
        if progress:
            tqdm.write(f"{desc} epoch {epoch + 1}/{recipe.epochs}: " +
                       " ".join(f"{k}={v:.4f}" for k, v in record.items() if k not in ("epoch", "steps")))
        if main:
            save_checkpoint(checkpoint_path, {
                "model": model.state_dict(), "distiller": distiller.state_dict() if distiller is not None else None,
                "task_loss": task.state_dict(), "optimizer": optimizer.state_dict(), "scaler": scaler.state_dict(),
                "epoch": epoch + 1, "history": result.history, "seconds": result.seconds})
    return result
