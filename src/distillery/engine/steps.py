"""What each DVC stage does, as plain functions of the validated params (the scripts in stages/ only parse
arguments and call these).

Teachers have names: ``teacher`` is params ``teacher`` (stages teacher/gallery/whitening@<ds>), any other name
is a group of params ``teachers`` (stages extra_teacher/extra_gallery/extra_whitening@<ds>-<name>), written
under ``artifacts/<ds>/teachers/<name>/``. A retrieval teacher group with ``checkpoint`` is imported, not
trained: ``checkpoint: pretrained`` keeps the architecture's own pretrained (torchvision) weights,
``checkpoint: <path>`` loads an external state dict into ``model``; either way the stage writes the same
teacher.pt, metrics and downstream gallery/whitening as a trained teacher.

The classification task's stages are in ``steps_cls``, helpers shared by both in ``stage_common``, the video
(SVD) parts in ``video``.
"""

from __future__ import annotations

import time

import numpy as np
import torch

from distillery.config import method_class, method_options, student_group, task_of, teacher_group
from distillery.data.cache import PreparedDataset, prepare_dataset
from distillery.engine import distributed
from distillery.engine.checkpoint import file_sha256, load_model_weights, save_checkpoint
from distillery.engine.experiment import Paths, build_network, embed, eval_rows, train_data, view_spec
from distillery.engine.stage_common import (fingerprint, import_teacher, load_teacher, network_groups, stage_runtime,
                                            write_train_log)
from distillery.engine.steps_cls import distill_cls, evaluate_cls, train_teacher_cls
from distillery.engine.teacher_cache import TeacherCache, build_teacher_cache
from distillery.engine.trainer import Recipe, train
from distillery.engine.video import ssl_fit_embeddings, video_metrics
from distillery.evaluation import retrieval_metrics, revisited_map
from distillery.evaluation.dml import dml_metrics
from distillery.losses import build_method
from distillery.utils.io import atomic_dir, write_json


SPEED_KEYS = ("amp", "channels_last", "compile")  # training.* switches that apply to the teacher's training too


def _teacher_seed(params: dict, group: dict) -> int:
    return params["seed"] if group.get("seed") is None else group["seed"]


def _teacher_tag(ds: str, name: str) -> str:
    """Metrics / log name of a teacher: ``teacher-<ds>`` or ``teacher-<ds>-<name>``."""
    return f"teacher-{ds}" if name == "teacher" else f"teacher-{ds}-{name}"


def _build_distiller(params: dict, method: str, task: str = "retrieval"):
    """The distiller of the ``methods.<method>`` group (its ``method`` key names the registered method)."""
    return build_method(method_class(params, method), **method_options(params, method, task))


def _scales(params: dict) -> list[float]:
    return params["evaluation"].get("scales") or [1.0]


def _own_metrics(model, prepared: PreparedDataset, spec, params: dict, device, scales=(1.0,),
                 video_similarity: str | None = None) -> dict:
    """``model`` on both sides: revisited Oxford/Paris mAP / mP@k where the cache has a ``gnd``, video mAP on a
    video dataset (:func:`video_metrics`), else :func:`retrieval_metrics` (query = gallery minus self where the
    dataset has one test set)."""
    if prepared.video_groundtruth is not None:
        return video_metrics(model, prepared, spec, params, device, scales, video_similarity)
    rows = eval_rows(prepared)
    batch, ks = params["evaluation"]["batch_size"], params["evaluation"]["ks"]
    q = embed(model, prepared.images, rows["query"], spec, batch_size=batch, device=device, scales=scales)
    same = rows["query"] is rows["gallery"]
    g = q if same else embed(model, prepared.images, rows["gallery"], spec, batch_size=batch, device=device,
                             scales=scales)
    if prepared.gnd is not None:
        return revisited_metrics(q, g, prepared.gnd, ks)
    return retrieval_metrics(q, prepared.labels(rows["query"]), g, prepared.labels(rows["gallery"]),
                             exclude_self=same, ks=ks)


def revisited_metrics(q: np.ndarray, g: np.ndarray, gnd: list[dict], ks) -> dict:
    """Cosine similarities of L2-normalised query (n_q x D) and database (n_db x D) descriptors ->
    :func:`revisited_map` (map_easy/medium/hard, mp_at_{k}_{setting}, percent)."""
    qn = torch.nn.functional.normalize(torch.from_numpy(np.ascontiguousarray(q)).float(), dim=-1)
    gn = torch.nn.functional.normalize(torch.from_numpy(np.ascontiguousarray(g)).float(), dim=-1)
    return revisited_map(qn @ gn.T, gnd, ks=tuple(ks))


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
                           max_per_class={"train": cfg["max_train_per_class"], "test": cfg["max_test_per_class"]},
                           crop_queries=cfg.get("crop_queries") is not False, train_from=cfg.get("train_from"))
    return meta


def train_teacher(params: dict, ds: str, paths: Paths = Paths(), progress: bool = True,
                  name: str = "teacher") -> dict:
    """Stage teacher@<ds> (extra_teacher@<ds>-<name>): train teacher ``name`` (CE + triplet) with its own seed
    (group ``seed``, default the global one), or import it (group ``checkpoint``); write its checkpoint and
    metrics (its own network on both sides, single scale: a change of evaluation.scales retrains nothing).
    Under torchrun every rank trains; rank 0 alone evaluates and writes (the others return {}).
    Classification datasets: the classifier (CE only, mdistiller recipe, single process) and its top-1/top-5."""
    if task_of(params, ds) == "classification":
        if name != "teacher":
            raise ValueError("extra teachers are a retrieval feature; the classification task has one teacher")
        return train_teacher_cls(params, ds, paths, progress)
    group = teacher_group(params, name)
    seed = _teacher_seed(params, group)
    device = stage_runtime(params, distributed_training=True, seed=seed)
    cfg = params["data"][ds]
    prepared = PreparedDataset(paths.prepared(ds))
    data = train_data(prepared)
    history, seconds, num_classes, scale = [], 0.0, data.num_classes, {}
    run_id = None
    if group.get("checkpoint"):
        model, num_classes = import_teacher(group, data.num_classes, cfg["channels"])
    else:
        model = build_network(group, data.num_classes, cfg["channels"])
        view = view_spec(group, cfg, train=True)
        run_id = f"{_teacher_tag(ds, name)}-{fingerprint(seed, group, cfg, prepared.meta)}"
        recipe = Recipe.from_params({**group, **{k: params["training"][k] for k in SPEED_KEYS}})
        result = train(model, data, recipe, view, seed=seed, device=device,
                       checkpoint_path=paths.resume(run_id), progress=progress, desc=f"{name} {ds}")
        history, seconds, scale = result.history, result.seconds, _scale(recipe, False)
    if not distributed.is_main():
        return {}
    save_checkpoint(paths.teacher(ds, name), {"model": model.state_dict(), "architecture": group,
                                              "num_classes": num_classes, "history": history, "seed": seed})
    write_train_log(paths.train_log(_teacher_tag(ds, name)), history or [{"epoch": 0, "loss": float("nan")}])
    metrics = _own_metrics(model, prepared, view_spec(group, cfg, train=False), params, device,
                           video_similarity=cfg.get("video_similarity"))
    metrics.update(train_seconds=round(seconds, 2), epochs=0 if group.get("checkpoint") else group["epochs"], **scale)
    write_json(paths.metrics(_teacher_tag(ds, name)), metrics)
    if run_id is not None:
        paths.resume(run_id).unlink(missing_ok=True)
    return metrics


def gallery(params: dict, ds: str, paths: Paths = Paths(), name: str = "teacher") -> dict:
    """Stage gallery@<ds> (extra_gallery@<ds>-<name>): embeddings of teacher ``name`` for the train images
    (single scale: the whitening fit; SVD (``augment: ssl_pair``): :func:`ssl_fit_embeddings`) and for the
    gallery images."""
    device = stage_runtime(params)
    cfg = params["data"][ds]
    prepared = PreparedDataset(paths.prepared(ds))
    teacher = load_teacher(params, ds, paths, name)
    spec = view_spec(teacher_group(params, name), cfg, train=False)
    batch = params["evaluation"]["batch_size"]
    with atomic_dir(paths.gallery(ds, name)) as tmp:
        train_rows = prepared.rows("train")
        if cfg.get("augment") == "ssl_pair":  # SVD: whiten_mtd's PCA-fit frames and views
            train = ssl_fit_embeddings(teacher, prepared, view_spec(teacher_group(params, name), cfg, train=True),
                                       batch_size=batch, device=device)
        else:
            train = embed(teacher, prepared.images, train_rows, spec, batch_size=batch, device=device)
        np.save(tmp / "train.npy", train)
        np.save(tmp / "gallery.npy", embed(teacher, prepared.images, eval_rows(prepared)["gallery"], spec,
                                           batch_size=batch, device=device))
        meta = {"teacher_sha256": file_sha256(paths.teacher(ds, name)), "n_train": int(len(train))}
        write_json(tmp / "meta.json", meta)
    return meta


def whitening(params: dict, ds: str, paths: Paths = Paths(), name: str = "teacher") -> dict:
    """Stage whitening@<ds> (extra_whitening@<ds>-<name>): PCA-whitening fitted on teacher ``name``'s
    training embeddings (never on query / gallery images)."""
    from distillery.models.whitening import fit_pca_whitening

    train_emb = torch.from_numpy(np.load(paths.gallery(ds, name) / "train.npy"))
    cfg = params["whitening"]
    white = fit_pca_whitening(train_emb, out_dim=cfg["out_dim"], whit=cfg["power"], floor_ratio=cfg["floor_ratio"])
    white.save(paths.whitening(ds, name))
    return {"in_dim": white.in_dim, "out_dim": white.out_dim, "n_floored": white.n_floored,
            "energy_kept": round(white.energy_kept, 6)}


def teacher_views(params: dict, ds: str, paths: Paths = Paths(), progress: bool = True) -> dict:
    """Stage teacher_views@<ds>: the frozen teacher's outputs on ``teacher_cache.views`` recorded views of every
    training image (FKD-style cache; ``views: 0`` writes an empty cache and training runs the teacher)."""
    device = stage_runtime(params)
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


def _teacher_inputs(params: dict, ds: str, distiller, paths: Paths) -> dict:
    """The trainer's teacher arguments: ``teacher``/``view_t``, or for a multi-teacher method ``teachers``/
    ``views_t`` (and, with ``whiten``, each teacher's frozen whitening layer set on the distiller)."""
    cfg = params["data"][ds]
    if not distiller.uses_teacher:
        return {"view_t": view_spec(params["teacher"], cfg, train=True)}
    if not distiller.multi_teacher:
        return {"teacher": load_teacher(params, ds, paths), "view_t": view_spec(params["teacher"], cfg, train=True)}
    names = distiller.teachers
    if getattr(distiller, "whiten", False):
        from distillery.models.whitening import WhiteningLayer

        distiller.set_whitening([WhiteningLayer.from_file(paths.whitening(ds, n)) for n in names])
    return {"teachers": [load_teacher(params, ds, paths, n) for n in names],
            "views_t": [view_spec(teacher_group(params, n), cfg, train=True) for n in names]}


def distill(params: dict, ds: str, method: str, cell: str, paths: Paths = Paths(), progress: bool = True) -> dict:
    """Train the student of ``method`` (a ``methods`` group) against its teacher(s) of ``ds``; writes
    ``paths.student(cell)`` (rank 0)."""
    if task_of(params, ds) == "classification":
        return distill_cls(params, ds, method, cell, paths, progress)
    device = stage_runtime(params, distributed_training=True)
    cfg, group = params["data"][ds], student_group(params, method)
    prepared = PreparedDataset(paths.prepared(ds))
    data = train_data(prepared)
    student = build_network(group, data.num_classes, cfg["channels"])
    distiller = _build_distiller(params, method)
    teacher_inputs = _teacher_inputs(params, ds, distiller, paths)
    recipe = Recipe.from_params(params["training"])
    teachers = {n: teacher_group(params, n) for n in getattr(distiller, "teachers", ())}
    views = (params.get("teacher_cache") or {}).get("views", 0)
    cache = TeacherCache(paths.teacher_views(ds), params["seed"], num_classes=data.num_classes) \
        if views and distiller.uses_teacher and not distiller.multi_teacher else None  # the main teacher's views
    run_id = f"student-{cell}-{fingerprint(params['seed'], group, params['training'], cfg, method, params['methods'][method], teachers, prepared.meta, views)}"
    t0 = time.perf_counter()
    result = train(student, data, recipe, view_spec(group, cfg, train=True), seed=params["seed"],
                   distiller=distiller, device=device, checkpoint_path=paths.resume(run_id), progress=progress,
                   desc=f"{method} {ds}", teacher_cache=cache, **teacher_inputs)
    if distributed.is_main():
        save_checkpoint(paths.student(cell), {"model": student.state_dict(), "architecture": group, "method": method,
                                              "num_classes": data.num_classes, "history": result.history})
        write_train_log(paths.train_log(cell), result.history)
        paths.resume(run_id).unlink(missing_ok=True)
    info = {"train_seconds": round(result.seconds, 2), "wall_seconds": round(time.perf_counter() - t0, 2),
            **_scale(recipe, distiller.uses_teacher)}
    if distiller.uses_teacher and (distiller.task_loss or recipe.task_loss) == "none":
        info["effective_batch_size"] = info.pop("effective_kd_batch_size")  # KD batches only
    return info


def evaluate(params: dict, ds: str, method: str, cell: str, paths: Paths = Paths(), extra: dict | None = None) -> dict:
    """Flat numeric metrics: ``asym_*`` (student queries vs teacher gallery; for methods without a teacher the
    gallery is the student's own, as D3still's Vanilla; NaN for multi-teacher methods, which have no single
    teacher space) and ``sym_*`` (student vs student; with query = gallery also the DML metrics
    ``sym_map_c_s2sd`` and, if ``evaluation.nmi``, ``sym_nmi``), plus ``extra``. On a revisited Oxford/Paris
    cache: the student on both sides (whiten_mtd's protocol), ``map_easy/medium/hard`` and
    ``mp_at_{k}_{setting}``; on a video dataset (SVD) likewise :func:`video_metrics` (``map_top100``,
    ``map_topinf``). Test embeddings use ``evaluation.scales`` (see ``experiment.multiscale``).
    Classification datasets: ``top1``/``top5`` of the student's logits on the test split."""
    if task_of(params, ds) == "classification":
        return evaluate_cls(params, ds, cell, paths, extra)
    device = stage_runtime(params)
    cfg, group = params["data"][ds], student_group(params, method)
    prepared = PreparedDataset(paths.prepared(ds))
    state = torch.load(paths.student(cell), map_location="cpu", weights_only=False)
    student = build_network(group, state["num_classes"], cfg["channels"])
    load_model_weights(student, paths.student(cell), what="student")
    spec = view_spec(group, cfg, train=False)
    if prepared.video_groundtruth is not None:  # SVD: the student on both sides, whiten_mtd's video protocol
        return {**video_metrics(student, prepared, spec, params, device, _scales(params), cfg.get("video_similarity")),
                **(extra or {})}
    rows = eval_rows(prepared)
    same = rows["query"] is rows["gallery"]
    batch, ks, scales = params["evaluation"]["batch_size"], params["evaluation"]["ks"], _scales(params)
    q = embed(student, prepared.images, rows["query"], spec, batch_size=batch, device=device, scales=scales)
    g_student = q if same else embed(student, prepared.images, rows["gallery"], spec, batch_size=batch,
                                     device=device, scales=scales)
    distiller = _build_distiller(params, method)
    uses_teacher = distiller.uses_teacher and not distiller.multi_teacher
    g_teacher = np.load(paths.gallery(ds) / "gallery.npy") if uses_teacher else g_student
    if params["evaluation"]["whitening"]:
        from distillery.models.whitening import PCAWhitening

        white = PCAWhitening.load(paths.whitening(ds))
        q, g_student, g_teacher = (white.apply(torch.from_numpy(a)).numpy() for a in (q, g_student, g_teacher))
    metrics = {}
    if prepared.gnd is not None:
        metrics.update({k: round(v, 4) for k, v in revisited_metrics(q, g_student, prepared.gnd, ks).items()})
        return {**metrics, **(extra or {})}
    ql, gl = prepared.labels(rows["query"]), prepared.labels(rows["gallery"])
    if q.shape[1] == g_teacher.shape[1] and not distiller.multi_teacher:
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
    """One line of the headline numbers of ``evaluate``'s metrics (either task; revisited Oxford/Paris)."""
    if "top1" in metrics:
        return f"top-1 {metrics['top1']:.2f}, top-5 {metrics.get('top5', float('nan')):.2f}"
    if "map_topinf" in metrics:
        return f"video mAP top-100 {metrics['map_top100']:.2f}, top-inf {metrics['map_topinf']:.2f}"
    if "map_medium" in metrics:
        return ", ".join(f"mAP {s} {metrics[f'map_{s}']:.2f}" for s in ("easy", "medium", "hard"))
    return f"asymmetric mAP {metrics['asym_map']:.2f}, symmetric mAP {metrics['sym_map']:.2f}"


def provenance(params: dict, ds: str, method: str, paths: Paths = Paths()) -> dict:
    """Where a result comes from: dataset, method, its hyper-parameters, seed and the teacher checkpoint
    hash(es) (every teacher of a multi-teacher method)."""
    teacher, student, _ = network_groups(params, ds)
    task = task_of(params, ds)
    if task != "classification":
        student = student_group(params, method)
    distiller = _build_distiller(params, method, task)
    names = distiller.teachers if distiller.multi_teacher else ("teacher",)
    shas = {n: file_sha256(paths.teacher(ds, n)) if paths.teacher(ds, n).exists() else None for n in names}
    out = {"dataset": ds, "method": method, "method_params": method_options(params, method, task),
           "seed": params["seed"], "teacher": teacher["model"], "student": student["model"],
           "teacher_sha256": shas.get("teacher")}
    if method_class(params, method) != method:
        out["method_class"] = method_class(params, method)
    if distiller.multi_teacher:
        out["teachers"] = {n: {"model": teacher_group(params, n)["model"], "sha256": shas[n]} for n in names}
    return out
