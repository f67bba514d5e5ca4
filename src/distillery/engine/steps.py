"""What each DVC stage does, as plain functions of the validated params (the scripts in stages/ only parse
arguments and call these).

Teachers have names: ``teacher`` is params ``teacher`` (stages teacher/gallery/whitening@<ds>), any other name
is a group of params ``teachers`` (stages extra_teacher/extra_gallery/extra_whitening@<ds>-<name>), written
under ``artifacts/<ds>/teachers/<name>/``. A teacher group with ``checkpoint`` is imported, not trained:
``checkpoint: pretrained`` keeps the architecture's own pretrained (torchvision) weights, ``checkpoint:
<path>`` loads an external state dict into ``model``; either way the stage writes the same teacher.pt,
metrics and downstream gallery/whitening as a trained teacher.
"""

from __future__ import annotations

import csv
import hashlib
import json
import time

from pathlib import Path

import numpy as np
import torch

from distillery.data.cache import PreparedDataset, prepare_dataset
from distillery.config import method_group, student_group, teacher_group
from distillery.data.transforms import ViewSpec
from distillery.engine.checkpoint import file_sha256, load_model_weights, save_checkpoint
from distillery.engine.experiment import Paths, build_network, embed, eval_rows, train_data, view_spec
from distillery.engine.runtime import setup_runtime
from distillery.engine.trainer import Recipe, train
from distillery.evaluation import retrieval_metrics, revisited_map
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


def _runtime(params: dict, seed: int | None = None) -> torch.device:
    t = params["training"]
    return setup_runtime(params["seed"] if seed is None else seed, params.get("deterministic", True), t["threads"],
                         t["device"])


def _teacher_seed(params: dict, group: dict) -> int:
    return params["seed"] if group.get("seed") is None else group["seed"]


def _teacher_tag(ds: str, name: str) -> str:
    """Metrics / log name of a teacher: ``teacher-<ds>`` or ``teacher-<ds>-<name>``."""
    return f"teacher-{ds}" if name == "teacher" else f"teacher-{ds}-{name}"


def _build_distiller(params: dict, method: str):
    registered, hyper = method_group(params, method)
    return build_method(registered, **hyper)


def _scales(params: dict) -> list[float]:
    return params["evaluation"].get("scales") or [1.0]


def _own_metrics(model, prepared: PreparedDataset, spec: ViewSpec, params: dict, device, scales=(1.0,)) -> dict:
    """``model`` on both sides: revisited Oxford/Paris mAP / mP@k where the cache has a ``gnd``, else
    :func:`retrieval_metrics` (query = gallery minus self where the dataset has one test set)."""
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
    metrics (its own network on both sides)."""
    group = teacher_group(params, name)
    seed = _teacher_seed(params, group)
    device = _runtime(params, seed)
    cfg = params["data"][ds]
    prepared = PreparedDataset(paths.prepared(ds))
    data = train_data(prepared)
    history, seconds, num_classes = [], 0.0, data.num_classes
    if group.get("checkpoint"):
        model, num_classes = import_teacher(group, data.num_classes, cfg["channels"])
    else:
        model = build_network(group, data.num_classes, cfg["channels"])
        view = view_spec(group, cfg, train=True)
        run_id = f"{_teacher_tag(ds, name)}-{_fingerprint(seed, group, cfg, prepared.meta)}"
        result = train(model, data, Recipe.from_params(group), view, seed=seed, device=device,
                       checkpoint_path=paths.resume(run_id), progress=progress, desc=f"{name} {ds}")
        history, seconds = result.history, result.seconds
        paths.resume(run_id).unlink(missing_ok=True)
    save_checkpoint(paths.teacher(ds, name), {"model": model.state_dict(), "architecture": group,
                                              "num_classes": num_classes, "history": history, "seed": seed})
    _write_train_log(paths.train_log(_teacher_tag(ds, name)), history or [{"epoch": 0, "loss": float("nan")}])
    # single scale: a change of evaluation.scales must not retrain the teachers
    metrics = _own_metrics(model, prepared, view_spec(group, cfg, train=False), params, device)
    metrics.update(train_seconds=round(seconds, 2), epochs=0 if group.get("checkpoint") else group["epochs"])
    write_json(paths.metrics(_teacher_tag(ds, name)), metrics)
    return metrics


def load_teacher(params: dict, ds: str, paths: Paths = Paths(), name: str = "teacher") -> torch.nn.Module:
    """Teacher ``name`` of ``ds`` as configured in params (strict load; a clear error if it does not fit)."""
    state = torch.load(paths.teacher(ds, name), map_location="cpu", weights_only=False)
    group = {**teacher_group(params, name), "pretrained": False}  # the weights come from the file
    model = build_network(group, state["num_classes"], params["data"][ds]["channels"])
    load_model_weights(model, paths.teacher(ds, name), what="teacher")
    return model.eval()


def gallery(params: dict, ds: str, paths: Paths = Paths(), name: str = "teacher") -> dict:
    """Stage gallery@<ds> (extra_gallery@<ds>-<name>): embeddings of teacher ``name`` for the train images
    (single scale: the whitening fit) and for the gallery images."""
    device = _runtime(params)
    cfg = params["data"][ds]
    prepared = PreparedDataset(paths.prepared(ds))
    teacher = load_teacher(params, ds, paths, name)
    spec = view_spec(teacher_group(params, name), cfg, train=False)
    batch = params["evaluation"]["batch_size"]
    with atomic_dir(paths.gallery(ds, name)) as tmp:
        train_rows = prepared.rows("train")
        np.save(tmp / "train.npy", embed(teacher, prepared.images, train_rows, spec, batch_size=batch, device=device))
        np.save(tmp / "gallery.npy", embed(teacher, prepared.images, eval_rows(prepared)["gallery"], spec,
                                           batch_size=batch, device=device))
        meta = {"teacher_sha256": file_sha256(paths.teacher(ds, name)), "n_train": int(len(train_rows))}
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


def _teacher_inputs(params: dict, ds: str, distiller, paths: Paths) -> dict:
    """The trainer's teacher arguments: ``teacher``/``view_t``, or for a multi-teacher method ``teachers``/
    ``views_t`` (and, with ``whiten``, each teacher's frozen whitening layer set on the distiller)."""
    cfg = params["data"][ds]
    if not distiller.uses_teacher:
        return {}
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
    ``paths.student(cell)``."""
    device = _runtime(params)
    cfg, group = params["data"][ds], student_group(params, method)
    prepared = PreparedDataset(paths.prepared(ds))
    data = train_data(prepared)
    student = build_network(group, data.num_classes, cfg["channels"])
    distiller = _build_distiller(params, method)
    teacher_inputs = _teacher_inputs(params, ds, distiller, paths)
    recipe = Recipe.from_params(params["training"])
    teachers = {n: teacher_group(params, n) for n in getattr(distiller, "teachers", ())}
    run_id = f"student-{cell}-{_fingerprint(params['seed'], group, params['training'], cfg, method, params['methods'][method], teachers, prepared.meta)}"
    t0 = time.perf_counter()
    result = train(student, data, recipe, view_spec(group, cfg, train=True), seed=params["seed"],
                   distiller=distiller, device=device, checkpoint_path=paths.resume(run_id), progress=progress,
                   desc=f"{method} {ds}", **teacher_inputs)
    save_checkpoint(paths.student(cell), {"model": student.state_dict(), "architecture": group, "method": method,
                                          "num_classes": data.num_classes, "history": result.history})
    _write_train_log(paths.train_log(cell), result.history)
    paths.resume(run_id).unlink(missing_ok=True)
    batch = recipe.kd_batch_size if not distiller.task_loss else recipe.ids_per_batch * recipe.samples_per_id
    return {"train_seconds": round(result.seconds, 2), "wall_seconds": round(time.perf_counter() - t0, 2),
            "effective_batch_size": batch}


def evaluate(params: dict, ds: str, method: str, cell: str, paths: Paths = Paths(), extra: dict | None = None) -> dict:
    """Flat numeric metrics: ``asym_*`` (student queries vs teacher gallery; for methods without a teacher the
    gallery is the student's own, as D3still's Vanilla; NaN for multi-teacher methods, which have no single
    teacher space) and ``sym_*`` (student vs student), plus ``extra``. On a revisited Oxford/Paris cache: the
    student on both sides (whiten_mtd's protocol), ``map_easy/medium/hard`` and ``mp_at_{k}_{setting}``.
    Test embeddings use ``evaluation.scales`` (multi-scale: see ``experiment.multiscale``)."""
    device = _runtime(params)
    cfg, group = params["data"][ds], student_group(params, method)
    prepared = PreparedDataset(paths.prepared(ds))
    state = torch.load(paths.student(cell), map_location="cpu", weights_only=False)
    student = build_network(group, state["num_classes"], cfg["channels"])
    load_model_weights(student, paths.student(cell), what="student")
    spec = view_spec(group, cfg, train=False)
    batch, ks, scales = params["evaluation"]["batch_size"], params["evaluation"]["ks"], _scales(params)
    rows = eval_rows(prepared)
    same = rows["query"] is rows["gallery"]
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
        metrics.update(extra or {})
        return metrics
    ql, gl = prepared.labels(rows["query"]), prepared.labels(rows["gallery"])
    if q.shape[1] == g_teacher.shape[1] and not distiller.multi_teacher:
        asym = retrieval_metrics(q, ql, g_teacher, gl, exclude_self=same, ks=ks)
    else:  # a student in another space than the teacher cannot query its gallery
        asym = {"map": float("nan"), **{f"recall_at_{k}": float("nan") for k in ks}}
    sym = retrieval_metrics(q, ql, g_student, gl, exclude_self=same, ks=ks)
    metrics.update({f"asym_{k}": round(v, 4) for k, v in asym.items() if isinstance(v, float)})
    metrics.update({f"sym_{k}": round(v, 4) for k, v in sym.items() if isinstance(v, float)})
    metrics.update(extra or {})
    return metrics


def provenance(params: dict, ds: str, method: str, paths: Paths = Paths()) -> dict:
    """Where a result comes from: dataset, method, its hyper-parameters, seed and the teacher checkpoint hash(es)."""
    distiller = _build_distiller(params, method)
    names = distiller.teachers if distiller.multi_teacher else ("teacher",)
    shas = {n: file_sha256(paths.teacher(ds, n)) if paths.teacher(ds, n).exists() else None for n in names}
    out = {"dataset": ds, "method": method, "method_params": params["methods"][method] or {}, "seed": params["seed"],
           "teacher": params["teacher"]["model"], "student": student_group(params, method)["model"],
           "teacher_sha256": shas.get("teacher")}
    if distiller.multi_teacher:
        out["teachers"] = {n: {"model": teacher_group(params, n)["model"], "sha256": shas[n]} for n in names}
    return out


def summary(metrics: dict) -> str:
    """A one-line digest of an evaluation's headline numbers, for the stage scripts' output."""
    names = {"asym_map": "asymmetric mAP", "sym_map": "symmetric mAP", "map_easy": "mAP easy",
             "map_medium": "mAP medium", "map_hard": "mAP hard"}
    return ", ".join(f"{label} {metrics[key]:.2f}" for key, label in names.items() if key in metrics)
