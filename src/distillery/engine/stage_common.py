"""Helpers shared by the stage functions of both tasks (``steps``, ``steps_cls``): run ids, training logs, the
stage runtime, the networks of a task and the teachers (trained or imported checkpoints)."""

from __future__ import annotations

import csv
import hashlib
import json
from pathlib import Path

import torch

from distillery.config import task_of, teacher_group
from distillery.engine import distributed
from distillery.engine.checkpoint import load_model_weights
from distillery.engine.experiment import Paths, build_network
from distillery.engine.runtime import setup_runtime
from distillery.utils.io import atomic_path


def fingerprint(*parts) -> str:
    """A short hash of JSON-able parts: the resume-checkpoint name of one configuration's run."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:10]


def write_train_log(path, history: list[dict]) -> None:
    """The per-epoch history as a CSV (``epoch`` first), written atomically."""
    keys = sorted({k for record in history for k in record}, key=lambda k: (k != "epoch", k))
    with atomic_path(path, ".csv") as tmp, open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=keys)
        writer.writeheader()
        writer.writerows(history)


def stage_runtime(params: dict, distributed_training: bool = False, seed: int | None = None) -> torch.device:
    """Seed (``seed``, default the global one), threads and device; a training stage under torchrun also joins
    the process group (its device is then this rank's GPU)."""
    t = params["training"]
    device = setup_runtime(params["seed"] if seed is None else seed, params.get("deterministic", True),
                           t["threads"], t["device"])
    return distributed.init_from_env(device) if distributed_training else device


SSL_ENCODER_PREFIX = "base_encoder."  # MoCo (v1-v3) checkpoints: the backbone among momentum encoder / predictor


def _state_dict_of(path) -> dict:
    """A state dict from an external file: a bare state dict, or one under ``model`` / ``state_dict``;
    DataParallel / DDP ``module.`` prefixes are stripped; a MoCo checkpoint keeps only its ``base_encoder.``
    (prefix stripped; its momentum encoder and predictor are dropped)."""
    state = torch.load(path, map_location="cpu", weights_only=True)
    for key in ("model", "state_dict"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict):
        raise ValueError(f"{path} holds no state dict (a dict of tensors, or one under 'model' / 'state_dict')")
    state = {k.removeprefix("module."): v for k, v in state.items()}
    if any(k.startswith(SSL_ENCODER_PREFIX) for k in state):
        state = {k.removeprefix(SSL_ENCODER_PREFIX): v for k, v in state.items() if k.startswith(SSL_ENCODER_PREFIX)}
    return state


def _backbone_only(model: torch.nn.Module, weights: dict) -> dict:
    """``weights`` of a self-supervised backbone (no classifier, or a projection head in its place) fitted to a
    model whose classifier is not part of its descriptor (``model.classifier_prefix``, e.g. the ImageNet ResNets'
    ``fc.``: embedding = pooled): the checkpoint's head keys are dropped and the model keeps its classifier init.
    Other models: ``weights`` unchanged (a strict load then names what does not fit)."""
    prefix = getattr(model, "classifier_prefix", None)
    own = model.state_dict()
    head_keys = {k for k in own if prefix and k.startswith(prefix)}
    if prefix is None or head_keys == {k for k in weights if k.startswith(prefix)}:
        return weights  # no head change, or a classifier with another class count (import_teacher adopts it)
    return {**{k: v for k, v in own.items() if k.startswith(prefix)},
            **{k: v for k, v in weights.items() if not k.startswith(prefix)}}


def import_teacher(group: dict, num_classes: int, channels: int) -> tuple[torch.nn.Module, int]:
    """The network of a teacher group with ``checkpoint`` set, and its number of classes.

    ``checkpoint: pretrained``: ``build_network`` with ``pretrained: true`` (e.g. a torchvision ImageNet model;
    its descriptor is the ``embedding`` field). ``checkpoint: <path>``: the file's state dict loaded strictly
    into ``model`` (self-supervised backbones, e.g. MoCo v3 / Barlow Twins ResNet-50s into ``resnet50``: see
    :func:`_state_dict_of` and :func:`_backbone_only`); when only the classifier's class count differs from the training set's (same first
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
    weights = _backbone_only(model, weights)
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


def network_groups(params: dict, ds: str) -> tuple[dict, dict, dict]:
    """(teacher, student, student recipe) params groups of the dataset's task: ``teacher``/``student``/``training``
    for retrieval, ``teacher_cls``/``student_cls``/``training_cls`` for classification."""
    if task_of(params, ds) == "classification":
        return params["teacher_cls"], params["student_cls"], params["training_cls"]
    return params["teacher"], params["student"], params["training"]


def load_teacher(params: dict, ds: str, paths: Paths = Paths(), name: str = "teacher") -> torch.nn.Module:
    """Teacher ``name`` of ``ds`` as configured in params (strict load; a clear error if it does not fit)."""
    state = torch.load(paths.teacher(ds, name), map_location="cpu", weights_only=False)
    group = network_groups(params, ds)[0] if name == "teacher" else teacher_group(params, name)
    group = {**group, "pretrained": False}  # the weights come from the file
    model = build_network(group, state["num_classes"], params["data"][ds]["channels"])
    load_model_weights(model, paths.teacher(ds, name), what="teacher")
    return model.eval()
