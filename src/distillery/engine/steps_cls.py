"""The classification task's stage functions (mdistiller recipe; called by ``steps`` for datasets with
``task: classification``): teacher, student distillation and top-1 / top-5 evaluation, single process."""

from __future__ import annotations

import time

import numpy as np
import torch

from distillery.config import method_class, method_options
from distillery.data.cache import PreparedDataset
from distillery.engine import distributed
from distillery.engine.checkpoint import load_model_weights, save_checkpoint
from distillery.engine.classification import ClassificationRecipe, evaluate_classifier, train_classifier
from distillery.engine.experiment import Paths, build_network, train_data, view_spec
from distillery.engine.stage_common import fingerprint, load_teacher, network_groups, stage_runtime, write_train_log
from distillery.losses import build_method
from distillery.utils.io import write_json


def _class_indices(prepared: PreparedDataset, rows: np.ndarray) -> np.ndarray:
    """Labels of ``rows`` as the contiguous class indices the networks were trained with (those of the train
    split, see ``TrainData.from_split``); a test class absent from training is an error."""
    classes = np.unique(prepared.labels(prepared.rows("train")))
    raw = prepared.labels(rows)
    unknown = sorted(set(raw.tolist()) - set(classes.tolist()))
    if unknown:
        raise ValueError(f"test labels {unknown[:5]} do not occur in the train split; a classification dataset "
                         f"needs the same classes in both (use protocol 'standard' / 'closed_set')")
    return np.searchsorted(classes, raw)


def _top_k(params: dict, model, prepared: PreparedDataset, group: dict, cfg: dict, device) -> dict:
    rows = prepared.rows("test")
    metrics = evaluate_classifier(model, prepared.images, rows, _class_indices(prepared, rows),
                                  view_spec(group, cfg, train=False), batch_size=params["evaluation"]["batch_size"],
                                  device=device)
    return {k: round(v, 4) for k, v in metrics.items()}


def _single_process(what: str) -> None:
    if distributed.launched_ranks() > 1:
        raise ValueError(f"{what}: the classification trainer runs in one process; launch it without torchrun")


def train_teacher_cls(params: dict, ds: str, paths: Paths, progress: bool) -> dict:
    _single_process(f"teacher_cls@{ds}")
    device = stage_runtime(params)
    cfg, group = params["data"][ds], params["teacher_cls"]
    prepared = PreparedDataset(paths.prepared(ds))
    data = train_data(prepared)
    model = build_network(group, data.num_classes, cfg["channels"])
    run_id = f"teacher-{ds}-{fingerprint(params['seed'], group, cfg, prepared.meta)}"
    result = train_classifier(model, data, ClassificationRecipe.from_params(group), view_spec(group, cfg, train=True),
                              seed=params["seed"], device=device, checkpoint_path=paths.resume(run_id),
                              progress=progress, desc=f"teacher {ds}")
    save_checkpoint(paths.teacher(ds), {"model": model.state_dict(), "architecture": group,
                                        "num_classes": data.num_classes, "history": result.history})
    write_train_log(paths.train_log(f"teacher-{ds}"), result.history)
    metrics = _top_k(params, model, prepared, group, cfg, device)
    metrics.update(train_seconds=round(result.seconds, 2), epochs=group["epochs"])
    write_json(paths.metrics(f"teacher-{ds}"), metrics)
    paths.resume(run_id).unlink(missing_ok=True)
    return metrics


def distill_cls(params: dict, ds: str, method: str, cell: str, paths: Paths, progress: bool) -> dict:
    _single_process(f"{method} on {ds}")
    device = stage_runtime(params)
    cfg = params["data"][ds]
    teacher_group, group, recipe_group = network_groups(params, ds)
    prepared = PreparedDataset(paths.prepared(ds))
    data = train_data(prepared)
    student = build_network(group, data.num_classes, cfg["channels"])
    options = method_options(params, method, "classification")
    distiller = build_method(method_class(params, method), **options)
    teacher = load_teacher(params, ds, paths) if distiller.uses_teacher else None
    recipe = ClassificationRecipe.from_params(recipe_group)
    run_id = f"student-{cell}-{fingerprint(params['seed'], group, recipe_group, cfg, method, options, prepared.meta)}"
    t0 = time.perf_counter()
    result = train_classifier(student, data, recipe, view_spec(group, cfg, train=True), seed=params["seed"],
                              distiller=distiller, teacher=teacher, view_t=view_spec(teacher_group, cfg, train=True),
                              device=device, checkpoint_path=paths.resume(run_id), progress=progress,
                              desc=f"{method} {ds}")
    save_checkpoint(paths.student(cell), {"model": student.state_dict(), "architecture": group, "method": method,
                                          "num_classes": data.num_classes, "history": result.history})
    write_train_log(paths.train_log(cell), result.history)
    paths.resume(run_id).unlink(missing_ok=True)
    return {"train_seconds": round(result.seconds, 2), "wall_seconds": round(time.perf_counter() - t0, 2),
            "world_size": 1, "effective_batch_size": recipe.batch_size}


def evaluate_cls(params: dict, ds: str, cell: str, paths: Paths, extra: dict | None) -> dict:
    device = stage_runtime(params)
    cfg, group = params["data"][ds], params["student_cls"]
    prepared = PreparedDataset(paths.prepared(ds))
    state = torch.load(paths.student(cell), map_location="cpu", weights_only=False)
    student = build_network(group, state["num_classes"], cfg["channels"])
    load_model_weights(student, paths.student(cell), what="student")
    return {**_top_k(params, student, prepared, group, cfg, device), **(extra or {})}
