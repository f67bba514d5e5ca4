"""Build the pieces of an experiment (views, networks, data, paths) from validated params."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from distillery.data.cache import PreparedDataset
from distillery.data.transforms import ViewSpec, eval_view
from distillery.engine.trainer import TrainData
from distillery.models import build_model
from distillery.models.registry import model_arguments


@dataclass(frozen=True)
class Paths:
    """Where every stage writes (all DVC outputs, see dvc.yaml)."""

    root: Path = Path(".")

    def prepared(self, ds: str) -> Path:
        return self.root / "data" / "prepared" / ds

    def _teacher_dir(self, ds: str, name: str) -> Path:
        """``artifacts/<ds>`` for the main teacher, ``artifacts/<ds>/teachers/<name>`` for an extra one."""
        base = self.root / "artifacts" / ds
        return base if name == "teacher" else base / "teachers" / name

    def teacher(self, ds: str, name: str = "teacher") -> Path:
        return self._teacher_dir(ds, name) / "teacher.pt"

    def gallery(self, ds: str, name: str = "teacher") -> Path:
        return self._teacher_dir(ds, name) / "gallery"

    def teacher_views(self, ds: str) -> Path:
        return self.root / "artifacts" / ds / "teacher_views"

    def whitening(self, ds: str, name: str = "teacher") -> Path:
        return self._teacher_dir(ds, name) / "whitening.pt"

    def student(self, cell: str) -> Path:
        return self.root / "artifacts" / "students" / f"{cell}.pt"

    def metrics(self, name: str) -> Path:
        return self.root / "metrics" / f"{name}.json"

    def train_log(self, name: str) -> Path:
        return self.root / "metrics" / "train_logs" / f"{name}.csv"

    def resume(self, name: str) -> Path:
        return self.root / "checkpoints" / f"{name}.pt"


def view_spec(group: dict, data_cfg: dict, train: bool) -> ViewSpec:
    """The ViewSpec of a network group (``teacher`` / ``student``) on dataset ``data_cfg``; the dataset's
    ``augment`` (``pad_crop`` default | ``ssl_pair``: whiten_mtd's SVD views) and ``test_view`` (``resize``
    default | ``center_crop`` | ``center_crop_raw``: whiten_mtd's SVD test transform without Normalize, its quirk)."""
    test_view = data_cfg.get("test_view") or "resize"
    return ViewSpec(resolution=group["resolution"], mean=tuple(data_cfg["mean"]), std=tuple(data_cfg["std"]),
                    padding=group["padding"] if train else 0, erase_prob=group["erase_prob"] if train else 0.0,
                    augment="ssl" if data_cfg.get("augment") == "ssl_pair" else "pad_crop",
                    test_view="center_crop" if test_view.startswith("center_crop") else "resize",
                    test_normalize=test_view != "center_crop_raw")


def build_network(group: dict, num_classes: int, channels: int) -> torch.nn.Module:
    """A backbone + head from a ``teacher``/``student`` params group.

    Only the options the architecture accepts are passed (CIFAR nets have no ``embedding_dim``); an option
    that matters but is not accepted (a pretrained request, a 1-channel input for an RGB-only net) is an error.
    """
    options = {"pretrained": group["pretrained"], "embedding_dim": group["embedding_dim"], "num_classes": num_classes,
               "in_channels": channels, **(group.get("model_options") or {})}
    accepted = model_arguments(group["model"])
    if "pretrained" not in accepted and options["pretrained"]:
        raise ValueError(f"model {group['model']!r} has no pretrained weights; set pretrained: false")
    if "in_channels" not in accepted and channels != 3:
        raise ValueError(f"model {group['model']!r} takes RGB input; set data.<dataset>.channels: 3")
    return build_model(group["model"], **{k: v for k, v in options.items() if k in accepted})


def train_data(prepared: PreparedDataset) -> TrainData:
    """The train split; on a video dataset (index column ``video_id``) with each row's video as ``groups``."""
    rows = prepared.rows("train")
    groups = None
    if "video_id" in prepared.index.columns:
        groups = pd.factorize(prepared.index["video_id"].to_numpy()[rows])[0].astype(np.int64)
    return TrainData.from_split(prepared.images, rows, prepared.labels(rows), groups)


def eval_rows(prepared: PreparedDataset) -> dict[str, np.ndarray]:
    """Query and gallery rows: ``test`` for both (query = gallery, exclude self) or ``query``/``gallery``."""
    if len(prepared.rows("query")):
        return {"query": prepared.rows("query"), "gallery": prepared.rows("gallery")}
    rows = prepared.rows("test")
    return {"query": rows, "gallery": rows}


def multiscale(model: torch.nn.Module, x: torch.Tensor, scales, field: str = "embedding") -> torch.Tensor:
    """whiten_mtd's multi-scale descriptor (whiten_mtd.md section 7): for each scale s the normalised batch
    ``x`` (B x C x H x W) is resized by ``F.interpolate(scale_factor=s, bilinear, align_corners=False)`` (s = 1:
    as is), embedded and L2-normalised; returns the mean of the per-scale vectors (B x D, not re-normalised).
    ``scales = (1,)`` returns the raw ``field`` (the official single-scale path: no L2)."""
    scales = tuple(float(s) for s in scales)
    if scales == (1.0,):
        return getattr(model(x), field)
    parts = []
    for s in scales:
        xs = x if s == 1.0 else F.interpolate(x, scale_factor=s, mode="bilinear", align_corners=False)
        parts.append(F.normalize(getattr(model(xs), field), p=2, dim=-1))
    return torch.stack(parts).mean(dim=0)


@torch.no_grad()
def embed(model: torch.nn.Module, images: np.ndarray, rows: np.ndarray, spec: ViewSpec, *, batch_size: int = 512,
          device=torch.device("cpu"), field: str = "embedding", scales=(1.0,)) -> np.ndarray:
    """``field`` of ``model`` for ``images[rows]`` at the test view, as an N x D float32 array (eval mode);
    with several ``scales`` the :func:`multiscale` descriptor."""
    model.eval().to(device)
    out = None  # filled in place: peak memory is the result plus one batch (a video gallery is millions of frames)
    for start in range(0, len(rows), batch_size):
        x = eval_view(images[rows[start:start + batch_size]], spec, device=device)
        feats = multiscale(model, x, scales, field).float().cpu().numpy()
        if out is None:
            out = np.empty((len(rows), feats.shape[1]), np.float32)
        out[start:start + len(feats)] = feats
    return out if out is not None else np.zeros((0, 0), np.float32)
