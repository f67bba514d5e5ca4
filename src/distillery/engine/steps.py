"""What each DVC stage does, as plain functions of the validated params (the scripts in stages/ only parse
arguments and call these)."""

from __future__ import annotations

import csv
import hashlib
import json
import time

import numpy as np
import torch

from distillery.config import method_options, task_of
from distillery.data.cache import PreparedDataset, prepare_dataset
from distillery.engine import distributed
from distillery.engine.checkpoint import file_sha256, load_model_weights, save_checkpoint
from distillery.engine.classification import ClassificationRecipe, evaluate_classifier, train_classifier
from distillery.engine.experiment import Paths, build_network, embed, eval_rows, train_data, view_spec
from distillery.engine.teacher_cache import TeacherCache, build_teacher_cache
from distillery.engine.runtime import setup_runtime
from distillery.engine.trainer import Recipe, train
from distillery.evaluation import retrieval_metrics
from distillery.evaluation.dml import dml_metrics
from distillery.losses import build_method
from distillery.utils.io import atomic_dir, atomic_path, write_json


def _fingerprint(*parts) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:10]


def _write_train_log(path, history: list[dict]) -> None:
    keys = sorted({k for record in history for k in record}, key=lambda k: (k != "epoch", k))
    with atomic_path(path, ".csv") as tmp, open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=keys)
        writer.writeheader()
        writer.writerows(history)


SPEED_KEYS = ("amp", "channels_last", "compile")  # training.* switches that apply to the teacher's training too


def _runtime(params: dict, distributed_training: bool = False) -> torch.device:
    """Seed, threads and device; a training stage under torchrun also joins the process group (its device is
    then this rank's GPU)."""
    t = params["training"]
    device = setup_runtime(params["seed"], params.get("deterministic", True), t["threads"], t["device"])
    return distributed.init_from_env(device) if distributed_training else device


def _scale(recipe: Recipe, uses_kd_batch: bool) -> dict:
    """World size and the global batch sizes of a (possibly distributed) run, for the metrics."""
    world = distributed.world_size()
    info = {"world_size": world, "effective_batch_size": recipe.ids_per_batch * recipe.samples_per_id * world}
    if uses_kd_batch:
        info["effective_kd_batch_size"] = recipe.kd_batch_size * world
    return info


def prepare(params: dict, ds: str, paths: Paths = Paths(), progress: bool = True) -> dict:
    """Stage prepare@<ds>: decode the dataset once into the uint8 cache."""
    cfg = params["data"][ds]
    meta = prepare_dataset(cfg["reader"], cfg["root"], paths.prepared(ds), store_size=cfg["store_size"],
                           channels=cfg["channels"], on_bad_image=cfg["on_bad_image"],
                           reader_options=cfg["reader_options"], progress=progress,
                           max_per_class={"train": cfg["max_train_per_class"], "test": cfg["max_test_per_class"]})
    return meta


def network_groups(params: dict, ds: str) -> tuple[dict, dict, dict]:
    """(teacher, student, student recipe) params groups of the dataset's task: ``teacher``/``student``/``training``
    for retrieval, ``teacher_cls``/``student_cls``/``training_cls`` for classification."""
    if task_of(params, ds) == "classification":
        return params["teacher_cls"], params["student_cls"], params["training_cls"]
    return params["teacher"], params["student"], params["training"]


def train_teacher(params: dict, ds: str, paths: Paths = Paths(), progress: bool = True) -> dict:
    """Stage teacher@<ds>: train the gallery network (CE + triplet); write its checkpoint and metrics.
    Under torchrun every rank trains; rank 0 alone evaluates and writes (the others return {}).
    Classification datasets: the classifier (CE only, mdistiller recipe, single process) and its top-1/top-5."""
    if task_of(params, ds) == "classification":
        return _train_teacher_cls(params, ds, paths, progress)
    device = _runtime(params, distributed_training=True)
    cfg, group = params["data"][ds], params["teacher"]
    prepared = PreparedDataset(paths.prepared(ds))
    data = train_data(prepared)
    model = build_network(group, data.num_classes, cfg["channels"])
    view = view_spec(group, cfg, train=True)
    run_id = f"teacher-{ds}-{_fingerprint(params['seed'], group, cfg, prepared.meta)}"
    recipe = Recipe.from_params({**group, **{k: params["training"][k] for k in SPEED_KEYS}})
    result = train(model, data, recipe, view, seed=params["seed"], device=device,
                   checkpoint_path=paths.resume(run_id), progress=progress, desc=f"teacher {ds}")
    if not distributed.is_main():
        return {}
    save_checkpoint(paths.teacher(ds), {"model": model.state_dict(), "architecture": group,
                                        "num_classes": data.num_classes, "history": result.history})
    _write_train_log(paths.train_log(f"teacher-{ds}"), result.history)
    rows = eval_rows(prepared)
    test_view = view_spec(group, cfg, train=False)
    q = embed(model, prepared.images, rows["query"], test_view, device=device)
    g = q if rows["query"] is rows["gallery"] else embed(model, prepared.images, rows["gallery"], test_view, device=device)
    metrics = retrieval_metrics(q, prepared.labels(rows["query"]), g, prepared.labels(rows["gallery"]),
                                exclude_self=rows["query"] is rows["gallery"], ks=params["evaluation"]["ks"])
    metrics.update(train_seconds=round(result.seconds, 2), epochs=group["epochs"], **_scale(recipe, False))
    write_json(paths.metrics(f"teacher-{ds}"), metrics)
    paths.resume(run_id).unlink(missing_ok=True)
    return metrics


def load_teacher(params: dict, ds: str, paths: Paths = Paths()) -> torch.nn.Module:
    """The trained teacher of ``ds`` as configured in params (strict load; a clear error if it does not fit)."""
    state = torch.load(paths.teacher(ds), map_location="cpu", weights_only=False)
    model = build_network(network_groups(params, ds)[0], state["num_classes"], params["data"][ds]["channels"])
    load_model_weights(model, paths.teacher(ds), what="teacher")
    return model.eval()


def gallery(params: dict, ds: str, paths: Paths = Paths()) -> dict:
    """Stage gallery@<ds>: teacher embeddings of the train images and of the gallery images."""
    device = _runtime(params)
    cfg = params["data"][ds]
    prepared = PreparedDataset(paths.prepared(ds))
    teacher = load_teacher(params, ds, paths)
    spec = view_spec(params["teacher"], cfg, train=False)
    batch = params["evaluation"]["batch_size"]
    with atomic_dir(paths.gallery(ds)) as tmp:
        train_rows = prepared.rows("train")
        np.save(tmp / "train.npy", embed(teacher, prepared.images, train_rows, spec, batch_size=batch, device=device))
        np.save(tmp / "gallery.npy", embed(teacher, prepared.images, eval_rows(prepared)["gallery"], spec,
                                           batch_size=batch, device=device))
        meta = {"teacher_sha256": file_sha256(paths.teacher(ds)), "n_train": int(len(train_rows))}
        write_json(tmp / "meta.json", meta)
    return meta


def whitening(params: dict, ds: str, paths: Paths = Paths()) -> dict:
    """Stage whitening@<ds>: PCA-whitening fitted on the teacher's training embeddings."""
    from distillery.models.whitening import fit_pca_whitening

    train_emb = torch.from_numpy(np.load(paths.gallery(ds) / "train.npy"))
    cfg = params["whitening"]
    white = fit_pca_whitening(train_emb, out_dim=cfg["out_dim"], whit=cfg["power"], floor_ratio=cfg["floor_ratio"])
    white.save(paths.whitening(ds))
    return {"in_dim": white.in_dim, "out_dim": white.out_dim, "n_floored": white.n_floored,
            "energy_kept": round(white.energy_kept, 6)}


def teacher_views(params: dict, ds: str, paths: Paths = Paths(), progress: bool = True) -> dict:
    """Stage teacher_views@<ds>: the frozen teacher's outputs on ``teacher_cache.views`` recorded views of every
    training image (FKD-style cache; ``views: 0`` writes an empty cache and training runs the teacher)."""
    device = _runtime(params)
    cfg, cache_cfg = params["data"][ds], params.get("teacher_cache") or {}
    views = cache_cfg.get("views", 0)
    if not views:
        with atomic_dir(paths.teacher_views(ds)) as tmp:
            write_json(tmp / "meta.json", {"views": 0, "bytes": 0, "build_seconds": 0.0})
        return {"views": 0, "bytes": 0, "build_seconds": 0.0}
    prepared = PreparedDataset(paths.prepared(ds))
    return build_teacher_cache(load_teacher(params, ds, paths), prepared.images, prepared.rows("train"),
                               view_spec(params["teacher"], cfg, train=True), paths.teacher_views(ds),
                               seed=params["seed"], views=views, logits_topk=cache_cfg.get("logits_topk"),
                               dtype=cache_cfg.get("dtype", "float32"), batch_size=params["evaluation"]["batch_size"],
                               device=device, progress=progress)


def distill(params: dict, ds: str, method: str, cell: str, paths: Paths = Paths(), progress: bool = True) -> dict:
    """Train the student of ``method`` against the teacher of ``ds``; writes ``paths.student(cell)`` (rank 0)."""
    if task_of(params, ds) == "classification":
        return _distill_cls(params, ds, method, cell, paths, progress)
    device = _runtime(params, distributed_training=True)
    cfg, group = params["data"][ds], params["student"]
    prepared = PreparedDataset(paths.prepared(ds))
    data = train_data(prepared)
    student = build_network(group, data.num_classes, cfg["channels"])
    distiller = build_method(method, **method_options(params, method))
    teacher = load_teacher(params, ds, paths) if distiller.uses_teacher else None
    recipe = Recipe.from_params(params["training"])
    views = (params.get("teacher_cache") or {}).get("views", 0)
    cache = TeacherCache(paths.teacher_views(ds), params["seed"], num_classes=data.num_classes) \
        if views and distiller.uses_teacher else None
    run_id = f"student-{cell}-{_fingerprint(params['seed'], group, params['training'], cfg, method, params['methods'][method], prepared.meta, views)}"
    t0 = time.perf_counter()
    result = train(student, data, recipe, view_spec(group, cfg, train=True), seed=params["seed"],
                   distiller=distiller, teacher=teacher, view_t=view_spec(params["teacher"], cfg, train=True),
                   device=device, checkpoint_path=paths.resume(run_id), progress=progress, desc=f"{method} {ds}",
                   teacher_cache=cache)
    if distributed.is_main():
        save_checkpoint(paths.student(cell), {"model": student.state_dict(), "architecture": group, "method": method,
                                              "num_classes": data.num_classes, "history": result.history})
        _write_train_log(paths.train_log(cell), result.history)
        paths.resume(run_id).unlink(missing_ok=True)
    return {"train_seconds": round(result.seconds, 2), "wall_seconds": round(time.perf_counter() - t0, 2),
            **_scale(recipe, distiller.uses_teacher)}


def evaluate(params: dict, ds: str, method: str, cell: str, paths: Paths = Paths(), extra: dict | None = None) -> dict:
    """Flat numeric metrics: ``asym_*`` (student queries vs teacher gallery; for methods without a teacher the
    gallery is the student's own, as D3still's Vanilla) and ``sym_*`` (student vs student; with query = gallery
    also the DML metrics ``sym_map_c_s2sd`` and, if ``evaluation.nmi``, ``sym_nmi``), plus ``extra``.
    Classification datasets: ``top1``/``top5`` of the student's logits on the test split."""
    if task_of(params, ds) == "classification":
        return _evaluate_cls(params, ds, cell, paths, extra)
    device = _runtime(params)
    cfg, group = params["data"][ds], params["student"]
    prepared = PreparedDataset(paths.prepared(ds))
    state = torch.load(paths.student(cell), map_location="cpu", weights_only=False)
    student = build_network(group, state["num_classes"], cfg["channels"])
    load_model_weights(student, paths.student(cell), what="student")
    rows = eval_rows(prepared)
    same = rows["query"] is rows["gallery"]
    spec = view_spec(group, cfg, train=False)
    batch, ks = params["evaluation"]["batch_size"], params["evaluation"]["ks"]
    q = embed(student, prepared.images, rows["query"], spec, batch_size=batch, device=device)
    g_student = q if same else embed(student, prepared.images, rows["gallery"], spec, batch_size=batch, device=device)
    uses_teacher = build_method(method, **method_options(params, method)).uses_teacher
    g_teacher = np.load(paths.gallery(ds) / "gallery.npy") if uses_teacher else g_student
    if params["evaluation"]["whitening"]:
        from distillery.models.whitening import PCAWhitening

        white = PCAWhitening.load(paths.whitening(ds))
        q, g_student, g_teacher = (white.apply(torch.from_numpy(a)).numpy() for a in (q, g_student, g_teacher))
    ql, gl = prepared.labels(rows["query"]), prepared.labels(rows["gallery"])
    metrics = {}
    if q.shape[1] == g_teacher.shape[1]:
        asym = retrieval_metrics(q, ql, g_teacher, gl, exclude_self=same, ks=ks)
    else:  # a student in another space than the teacher cannot query its gallery
        asym = {"map": float("nan"), **{f"recall_at_{k}": float("nan") for k in ks}}
    sym = dml_metrics(q, ql, ks=ks, seed=params["seed"], nmi=bool(params["evaluation"].get("nmi"))) if same \
        else retrieval_metrics(q, ql, g_student, gl, exclude_self=False, ks=ks)
    metrics.update({f"asym_{k}": round(v, 4) for k, v in asym.items() if isinstance(v, float)})
    metrics.update({f"sym_{k}": round(v, 4) for k, v in sym.items() if isinstance(v, float)})
    metrics.update(extra or {})
    return metrics


def summary(metrics: dict) -> str:
    """One line of the headline numbers of ``evaluate``'s metrics (either task)."""
    if "top1" in metrics:
        return f"top-1 {metrics['top1']:.2f}, top-5 {metrics.get('top5', float('nan')):.2f}"
    return f"asymmetric mAP {metrics['asym_map']:.2f}, symmetric mAP {metrics['sym_map']:.2f}"


def provenance(params: dict, ds: str, method: str, paths: Paths = Paths()) -> dict:
    """Where a result comes from: dataset, method, its hyper-parameters, seed and the teacher checkpoint hash."""
    teacher, student, _ = network_groups(params, ds)
    return {"dataset": ds, "method": method, "method_params": method_options(params, method, task_of(params, ds)),
            "seed": params["seed"], "teacher": teacher["model"], "student": student["model"],
            "teacher_sha256": file_sha256(paths.teacher(ds)) if paths.teacher(ds).exists() else None}


# ------------------------------------------------------------------------------ classification task
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


def _train_teacher_cls(params: dict, ds: str, paths: Paths, progress: bool) -> dict:
    _single_process(f"teacher_cls@{ds}")
    device = _runtime(params)
    cfg, group = params["data"][ds], params["teacher_cls"]
    prepared = PreparedDataset(paths.prepared(ds))
    data = train_data(prepared)
    model = build_network(group, data.num_classes, cfg["channels"])
    run_id = f"teacher-{ds}-{_fingerprint(params['seed'], group, cfg, prepared.meta)}"
    result = train_classifier(model, data, ClassificationRecipe.from_params(group), view_spec(group, cfg, train=True),
                              seed=params["seed"], device=device, checkpoint_path=paths.resume(run_id),
                              progress=progress, desc=f"teacher {ds}")
    save_checkpoint(paths.teacher(ds), {"model": model.state_dict(), "architecture": group,
                                        "num_classes": data.num_classes, "history": result.history})
    _write_train_log(paths.train_log(f"teacher-{ds}"), result.history)
    metrics = _top_k(params, model, prepared, group, cfg, device)
    metrics.update(train_seconds=round(result.seconds, 2), epochs=group["epochs"])
    write_json(paths.metrics(f"teacher-{ds}"), metrics)
    paths.resume(run_id).unlink(missing_ok=True)
    return metrics


def _distill_cls(params: dict, ds: str, method: str, cell: str, paths: Paths, progress: bool) -> dict:
    _single_process(f"{method} on {ds}")
    device = _runtime(params)
    cfg = params["data"][ds]
    teacher_group, group, recipe_group = network_groups(params, ds)
    prepared = PreparedDataset(paths.prepared(ds))
    data = train_data(prepared)
    student = build_network(group, data.num_classes, cfg["channels"])
    options = method_options(params, method, "classification")
    distiller = build_method(method, **options)
    teacher = load_teacher(params, ds, paths) if distiller.uses_teacher else None
    recipe = ClassificationRecipe.from_params(recipe_group)
    run_id = f"student-{cell}-{_fingerprint(params['seed'], group, recipe_group, cfg, method, options, prepared.meta)}"
    t0 = time.perf_counter()
    result = train_classifier(student, data, recipe, view_spec(group, cfg, train=True), seed=params["seed"],
                              distiller=distiller, teacher=teacher, view_t=view_spec(teacher_group, cfg, train=True),
                              device=device, checkpoint_path=paths.resume(run_id), progress=progress,
                              desc=f"{method} {ds}")
    save_checkpoint(paths.student(cell), {"model": student.state_dict(), "architecture": group, "method": method,
                                          "num_classes": data.num_classes, "history": result.history})
    _write_train_log(paths.train_log(cell), result.history)
    paths.resume(run_id).unlink(missing_ok=True)
    return {"train_seconds": round(result.seconds, 2), "wall_seconds": round(time.perf_counter() - t0, 2),
            "world_size": 1, "effective_batch_size": recipe.batch_size}


def _evaluate_cls(params: dict, ds: str, cell: str, paths: Paths, extra: dict | None) -> dict:
    device = _runtime(params)
    cfg, group = params["data"][ds], params["student_cls"]
    prepared = PreparedDataset(paths.prepared(ds))
    state = torch.load(paths.student(cell), map_location="cpu", weights_only=False)
    student = build_network(group, state["num_classes"], cfg["channels"])
    load_model_weights(student, paths.student(cell), what="student")
    return {**_top_k(params, student, prepared, group, cfg, device), **(extra or {})}
