"""The classification training loop (mdistiller recipe), shared by the teacher and every distillation method.

One step: a shuffled batch, one augmented view per image; the student's loss is ``ce_weight`` x CE on its
logits (no label smoothing; the method's ``ce_weight``, mdistiller's per-method CE_WEIGHT) plus the method's
weighted terms, computed with the frozen teacher's outputs on the same images (mdistiller: same batch, same
view; when the two networks have different view specs the teacher's view uses the same random draws at its
own resolution). SGD with momentum and weight decay, step learning rate ``lr * rate ** #{s : epoch > s}`` for
the 1-based epoch. A method's ``make_optimizer`` may replace SGD (DOT): its optimizer is then stepped the
official way, ``step_kd()`` after the backward of the method terms and ``step()`` after the backward of the CE.

Everything random is a function of (seed, epoch) and a checkpoint is written after every epoch, so a resumed
run reproduces the uninterrupted one (as the retrieval trainer, ``engine/trainer.py``).
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

from distillery.data import streams
from distillery.data.samplers import shuffled_batches
from distillery.data.transforms import ViewSpec, eval_view, train_views
from distillery.engine.checkpoint import load_checkpoint, save_checkpoint
from distillery.engine.trainer import TrainData, TrainResult, _check_finite
from distillery.evaluation import classification_metrics
from distillery.losses.base import Distiller
from distillery.models.shapes import probe_shapes

STREAM_CLS = streams.CLS  # the one view of a classification step (student and teacher share its random draws)


@dataclass
class ClassificationRecipe:
    """Optimisation settings of one classification run (params.yaml ``teacher_cls`` / ``training_cls``)."""

    epochs: int
    lr: float
    lr_decay_epochs: list[int] = field(default_factory=list)
    lr_decay_rate: float = 0.1
    weight_decay: float = 5e-4
    momentum: float = 0.9
    batch_size: int = 64
    grad_clip: float | None = None

    @classmethod
    def from_params(cls, group: dict) -> "ClassificationRecipe":
        names = cls.__dataclass_fields__
        return cls(**{k: v for k, v in group.items() if k in names})


def step_lr(epoch: int, recipe: ClassificationRecipe) -> float:
    """mdistiller's ``adjust_learning_rate``: ``lr * rate ** #{s in lr_decay_epochs : epoch > s}``, epoch 1-based
    (with stages 150, 180, 210: epochs 1-150 at lr, 151-180 at lr/10, ...)."""
    steps = sum(epoch > s for s in recipe.lr_decay_epochs)
    return recipe.lr * recipe.lr_decay_rate ** steps


def epoch_batches(n: int, batch_size: int, *, seed: int, epoch: int) -> list[np.ndarray]:
    """A seeded shuffle of range(n) in batches of ``batch_size``; the last, smaller batch is kept (mdistiller's
    loader, drop_last False) unless it holds a single sample (BatchNorm cannot train on one)."""
    batches = shuffled_batches(n, batch_size, seed=seed, epoch=epoch, drop_last=False)
    return [b for b in batches if len(b) > 1]


@torch.no_grad()
def predict_logits(model: nn.Module, images: np.ndarray, rows: np.ndarray, spec: ViewSpec, *, batch_size: int = 512,
                   device=torch.device("cpu")) -> torch.Tensor:
    """The model's (main) logits for ``images[rows]`` at the test view, N x C float32 on the CPU (eval mode)."""
    model.eval().to(device)
    chunks = [model(eval_view(images[rows[i:i + batch_size]], spec, device)).logits.float().cpu()
              for i in range(0, len(rows), batch_size)]
    return torch.cat(chunks)


def evaluate_classifier(model: nn.Module, images: np.ndarray, rows: np.ndarray, labels: np.ndarray, spec: ViewSpec,
                        *, ks=(1, 5), batch_size: int = 512, device=torch.device("cpu")) -> dict[str, float]:
    """``top{k}`` accuracies (percent) of ``model`` on ``images[rows]`` with class indices ``labels``."""
    logits = predict_logits(model, images, rows, spec, batch_size=batch_size, device=device)
    ks = tuple(k for k in ks if k <= logits.shape[1])
    return classification_metrics(logits, torch.as_tensor(np.asarray(labels)), ks=ks)


def _prepare_distiller(distiller, model, teacher, data, view_s, view_t, seed, device):
    channels = data.images.shape[-1]
    uses_teacher = distiller.uses_teacher
    shapes_t = probe_shapes(teacher, (channels, view_t.resolution, view_t.resolution)) if uses_teacher else {}
    distiller.setup(probe_shapes(model, (channels, view_s.resolution, view_s.resolution)), shapes_t)
    distiller.to(device)
    if uses_teacher:
        teacher.to(device).eval()
        for p in teacher.parameters():
            p.requires_grad_(False)
        distiller.bind_teacher(teacher)
    distiller.bind_data(data.labels, seed)
    distiller.to(device)


def train_classifier(model: nn.Module, data: TrainData, recipe: ClassificationRecipe, view_s: ViewSpec, *, seed: int,
                     checkpoint_path, distiller: Distiller | None = None, teacher: nn.Module | None = None,
                     view_t: ViewSpec | None = None, device=torch.device("cpu"), progress: bool = True,
                     desc: str = "train", stop_after_steps: int | None = None) -> TrainResult:
    """Train ``model`` (in place) for classification and write an atomic checkpoint after every epoch.

    ``distiller`` None trains with CE alone (the teacher; weight 1). If ``checkpoint_path`` holds a checkpoint
    of this run, training resumes after its last finished epoch. ``stop_after_steps`` (tests only) stops the run
    abruptly after that many optimisation steps. History records per epoch: lr, mean loss terms, train top-1.
    """
    checkpoint_path = Path(checkpoint_path)
    uses_teacher = distiller is not None and distiller.uses_teacher
    if uses_teacher and teacher is None:
        raise ValueError("a distillation method that uses a teacher needs `teacher`")
    view_t = view_t or view_s
    model.to(device)
    if distiller is not None:
        _prepare_distiller(distiller, model, teacher, data, view_s, view_t, seed, device)
    params = list(model.parameters()) + (list(distiller.parameters()) if distiller is not None else [])
    optimizer = distiller.make_optimizer(params, recipe) if distiller is not None else None
    two_branch = optimizer is not None  # DOT: separate backward passes for the method terms and the CE
    if optimizer is None:
        optimizer = torch.optim.SGD(params, lr=recipe.lr, momentum=recipe.momentum, weight_decay=recipe.weight_decay)
    ce_weight = distiller.ce_weight if distiller is not None else 1.0

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
    same_view = view_t == view_s
    for epoch in range(start_epoch, recipe.epochs):
        t0 = time.perf_counter()
        lr = step_lr(epoch + 1, recipe)
        for group in optimizer.param_groups:
            group["lr"] = lr
        batches = epoch_batches(len(data.rows), recipe.batch_size, seed=seed, epoch=epoch)
        if not batches:
            raise ValueError(f"an epoch has no batch of 2 or more images: {len(data.rows)} training images")
        model.train()
        if distiller is not None:
            distiller.train()
            distiller.set_epoch(epoch + 1)
        if uses_teacher:
            teacher.train(distiller.teacher_train_mode)
        sums: dict[str, float] = {}
        correct = seen = 0
        bar = tqdm(range(len(batches)), desc=f"{desc} epoch {epoch + 1}/{recipe.epochs}", disable=not progress,
                   leave=False, mininterval=1)
        for step in bar:
            pos = batches[step]
            rows = data.rows[pos]
            target = torch.as_tensor(data.labels[pos], device=device)
            images = data.images[rows]
            x = train_views(images, rows, view_s, seed=seed, stream=STREAM_CLS, view=epoch, device=device)
            out = model(x)
            task = {"ce": ce_weight * F.cross_entropy(out.logits, target)}
            method_terms = {}
            if distiller is not None:
                out_t = None
                if uses_teacher:
                    x_t = x if same_view else train_views(images, rows, view_t, seed=seed, stream=STREAM_CLS,
                                                          view=epoch, device=device)
                    with torch.no_grad():
                        out_t = teacher(x_t)
                extra = {"index": torch.as_tensor(pos, device=device)} if distiller.needs_sample_index else {}
                method_terms = distiller(out, out_t, target, **extra)
            terms = {**task, **method_terms}
            loss = sum(terms.values())
            _check_finite(loss, terms, epoch, step, checkpoint_path)
            if two_branch:
                optimizer.zero_grad(set_to_none=True)
                if method_terms:
                    sum(method_terms.values()).backward(retain_graph=True)
                optimizer.step_kd()
                optimizer.zero_grad(set_to_none=True)
                task["ce"].backward()
            else:
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
            if recipe.grad_clip:
                torch.nn.utils.clip_grad_norm_(params, recipe.grad_clip)
            optimizer.step()
            for k, v in {"loss": loss, **terms}.items():
                sums[k] = sums.get(k, 0.0) + float(v.detach())
            correct += int((out.logits.detach().argmax(1) == target).sum())
            seen += len(pos)
            bar.set_postfix(loss=f"{sums['loss'] / (step + 1):.3f}", refresh=False)
            steps_done += 1
            if stop_after_steps is not None and steps_done >= stop_after_steps:
                raise KeyboardInterrupt(f"stopped after {steps_done} steps (test hook)")
        seconds = time.perf_counter() - t0
        result.seconds += seconds
        record = {"epoch": epoch + 1, "lr": lr, "steps": len(batches), "seconds": round(seconds, 3),
                  "train_top1": 100.0 * correct / max(seen, 1), **{k: v / len(batches) for k, v in sums.items()}}
        result.history.append(record)
        if progress:
            tqdm.write(f"{desc} epoch {epoch + 1}/{recipe.epochs}: " +
                       " ".join(f"{k}={v:.4f}" for k, v in record.items() if k not in ("epoch", "steps")))
        save_checkpoint(checkpoint_path, {
            "model": model.state_dict(), "distiller": distiller.state_dict() if distiller is not None else None,
            "optimizer": optimizer.state_dict(), "epoch": epoch + 1, "history": result.history,
            "seconds": result.seconds})
    if uses_teacher:
        teacher.eval()
    return result
