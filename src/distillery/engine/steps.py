"""What each DVC stage does, as plain functions of the validated params (the scripts in stages/ only parse
arguments and call these).

Teachers have names: ``teacher`` is params ``teacher`` (stages teacher/gallery/whitening@<ds>), any other name
is a group of params ``teachers`` (stages extra_teacher/extra_gallery/extra_whitening@<ds>-<name>), written
under ``artifacts/<ds>/teachers/<name>/``. A retrieval teacher group with ``checkpoint`` is imported, not
trained: ``checkpoint: pretrained`` keeps the architecture's own pretrained (torchvision) weights,
``checkpoint: <path>`` loads an external state dict into ``model``; either way the stage writes the same
teacher.pt, metrics and downstream gallery/whitening as a trained teacher.
"""

from __future__ import annotations

import csv
import hashlib
import json
import time
from pathlib import Path

import numpy as np
import torch

from distillery.config import method_class, method_options, student_group, task_of, teacher_group
from distillery.data.cache import PreparedDataset, prepare_dataset
from distillery.engine import distributed
from distillery.engine.checkpoint import file_sha256, load_model_weights, save_checkpoint
from distillery.engine.classification import ClassificationRecipe, evaluate_classifier, train_classifier
from distillery.engine.experiment import Paths, build_network, embed, eval_rows, train_data, view_spec
from distillery.engine.teacher_cache import TeacherCache, build_teacher_cache
from distillery.engine.video import ssl_fit_embeddings, video_metrics
from distillery.engine.runtime import setup_runtime
from distillery.engine.trainer import Recipe, train
from distillery.evaluation import retrieval_metrics, revisited_map
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


def _runtime(params: dict, distributed_training: bool = False, seed: int | None = None) -> torch.device:
    """Seed (``seed``, default the global one), threads and device; a training stage under torchrun also joins
    the process group (its device is then this rank's GPU)."""
    t = params["training"]
    device = setup_runtime(params["seed"] if seed is None else seed, params.get("deterministic", True),
                           t["threads"], t["device"])
    return distributed.init_from_env(device) if distributed_training else device


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


def _state_dict_of(path) -> dict:
    """A state dict from an external file: a bare state dict, or one under ``model`` / ``state_dict``;
    DataParallel / DDP ``module.`` prefixes are stripped."""
    state = torch.load(path, map_location="cpu", weights_only=True)
    for key in ("model", "state_dict"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict):
        raise ValueError(f"{path} holds no state dict (a dict of tensors, or one under 'model' / 'state_dict')")
    return {k.removeprefix("module."): v for k, v in state.items()}


def import_teacher(group: dict, num_classes: int, channels: int) -> tuple[torch.nn.Module, int]:
    """The network of a teacher group with ``checkpoint`` set, and its number of classes.

    ``checkpoint: pretrained``: ``build_network`` with ``pretrained: true`` (e.g. a torchvision ImageNet model;
    its descriptor is the ``embedding`` field). ``checkpoint: <path>``: the file's state dict loaded strictly
    into ``model``; when only the classifier's class count differs from the training set's (same first
    dimension in every mismatching tensor) the network is rebuilt with the checkpoint's count.
    """
    source = group["checkpoint"]
    if source == "pretrained":
        if not group["pretrained"]:
            raise ValueError("checkpoint: pretrained keeps the architecture's pretrained weights; set pretrained: true")
        return build_network(group, num_classes, channels), num_classes
    if not Path(source).is_file():
        raise FileNotFoundError(f"teacher checkpoint {source} not found (teacher group key `checkpoint`)")
    weights = _state_dict_of(source)
    model = build_network({**group, "pretrained": False}, num_classes, channels)
    own = model.state_dict()
    sizes = {weights[k].shape[0] for k in own if k in weights and weights[k].shape != own[k].shape
             and weights[k].dim() and weights[k].shape[1:] == own[k].shape[1:]}
    if len(sizes) == 1:
        num_classes = sizes.pop()
        model = build_network({**group, "pretrained": False}, num_classes, channels)
    try:
        model.load_state_dict(weights, strict=True)
    except RuntimeError as err:
        raise ValueError(f"teacher checkpoint {source} does not fit model {group['model']!r}: "
                         f"{str(err).splitlines()[-1].strip()[:200]}") from None
    return model, num_classes


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


def network_groups(params: dict, ds: str) -> tuple[dict, dict, dict]:
    """(teacher, student, student recipe) params groups of the dataset's task: ``teacher``/``student``/``training``
    for retrieval, ``teacher_cls``/``student_cls``/``training_cls`` for classification."""
    if task_of(params, ds) == "classification":
        return params["teacher_cls"], params["student_cls"], params["training_cls"]
    return params["teacher"], params["student"], params["training"]


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
        return _train_teacher_cls(params, ds, paths, progress)
    group = teacher_group(params, name)
    seed = _teacher_seed(params, group)
    device = _runtime(params, distributed_training=True, seed=seed)
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
        run_id = f"{_teacher_tag(ds, name)}-{_fingerprint(seed, group, cfg, prepared.meta)}"
        recipe = Recipe.from_params({**group, **{k: params["training"][k] for k in SPEED_KEYS}})
        result = train(model, data, recipe, view, seed=seed, device=device,
                       checkpoint_path=paths.resume(run_id), progress=progress, desc=f"{name} {ds}")
        history, seconds, scale = result.history, result.seconds, _scale(recipe, False)
    if not distributed.is_main():
        return {}
    save_checkpoint(paths.teacher(ds, name), {"model": model.state_dict(), "architecture": group,
                                              "num_classes": num_classes, "history": history, "seed": seed})
    _write_train_log(paths.train_log(_teacher_tag(ds, name)), history or [{"epoch": 0, "loss": float("nan")}])
    metrics = _own_metrics(model, prepared, view_spec(group, cfg, train=False), params, device,
                           video_similarity=cfg.get("video_similarity"))
    metrics.update(train_seconds=round(seconds, 2), epochs=0 if group.get("checkpoint") else group["epochs"], **scale)
    write_json(paths.metrics(_teacher_tag(ds, name)), metrics)
    if run_id is not None:
        paths.resume(run_id).unlink(missing_ok=True)
    return metrics


def load_teacher(params: dict, ds: str, paths: Paths = Paths(), name: str = "teacher") -> torch.nn.Module:
    """Teacher ``name`` of ``ds`` as configured in params (strict load; a clear error if it does not fit)."""
    state = torch.load(paths.teacher(ds, name), map_location="cpu", weights_only=False)
    group = network_groups(params, ds)[0] if name == "teacher" else teacher_group(params, name)
    group = {**group, "pretrained": False}  # the weights come from the file
    model = build_network(group, state["num_classes"], params["data"][ds]["channels"])
    load_model_weights(model, paths.teacher(ds, name), what="teacher")
    return model.eval()


def gallery(params: dict, ds: str, paths: Paths = Paths(), name: str = "teacher") -> dict:
    """Stage gallery@<ds> (extra_gallery@<ds>-<name>): embeddings of teacher ``name`` for the train images
    (single scale: the whitening fit; SVD (``augment: ssl_pair``): :func:`ssl_fit_embeddings`) and for the
    gallery images."""
    device = _runtime(params)
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
        return _distill_cls(params, ds, method, cell, paths, progress)
    device = _runtime(params, distributed_training=True)
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
    run_id = f"student-{cell}-{_fingerprint(params['seed'], group, params['training'], cfg, method, params['methods'][method], teachers, prepared.meta, views)}"
    t0 = time.perf_counter()
    result = train(student, data, recipe, view_spec(group, cfg, train=True), seed=params["seed"],
                   distiller=distiller, device=device, checkpoint_path=paths.resume(run_id), progress=progress,
                   desc=f"{method} {ds}", teacher_cache=cache, **teacher_inputs)
    if distributed.is_main():
        save_checkpoint(paths.student(cell), {"model": student.state_dict(), "architecture": group, "method": method,
                                              "num_classes": data.num_classes, "history": result.history})
        _write_train_log(paths.train_log(cell), result.history)
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
        return _evaluate_cls(params, ds, cell, paths, extra)
    device = _runtime(params)
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
    distiller = build_method(method_class(params, method), **options)
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
