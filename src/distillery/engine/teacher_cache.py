"""Teacher-output cache (FKD-style replayable views): run the frozen teacher once per recorded view.

Without the cache, epoch ``e`` shows the teacher view number ``e`` of every image (views are drawn from
``(seed, stream=KD teacher, view=e, image)``, see ``data/transforms.py``), so the teacher runs once per image
per epoch. With the cache, stage ``teacher_views@<ds>`` runs the teacher once on views ``0..V-1`` of every
training image and stores what the methods read; each epoch then picks one of the V views per image (seeded)
and the trainer reads the teacher's outputs instead of running it. With V >= epochs and the pick "view = epoch"
the cached run equals the uncached one exactly.

Layout of ``<dir>/``: ``<field>.npy`` arrays V x N x ... (float32, or float16 to halve the size; logits either
full or, for many classes, FKD's top-k compression ``logits_topk_values`` / ``logits_topk_indices``),
``rows.npy`` (the training rows, in order) and ``meta.json`` (views, fields, bytes, build seconds).
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch

from distillery.data import streams
from distillery.data.transforms import ViewSpec, train_views
from distillery.models.output import ModelOutput
from distillery.utils.io import atomic_dir, read_json, write_json

CACHEABLE = ("embedding", "pooled", "logits")
STREAM_KD_TEACHER = streams.KD_TEACHER  # the trainer's KD teacher views, replayed


class CacheRefused(ValueError):
    """A method needs teacher outputs that the cache does not hold."""


def check_cacheable(method: str, teacher_outputs: tuple[str, ...]) -> None:
    """Raise CacheRefused (one line) if the method reads anything beyond embedding/pooled/logits."""
    missing = [f for f in teacher_outputs if f not in CACHEABLE]
    if missing:
        raise CacheRefused(f"method {method!r} reads the teacher's {', '.join(missing)}, which the teacher-output cache "
                           f"does not store; set teacher_cache.views: 0 for this method")


@torch.no_grad()
def build_teacher_cache(teacher: torch.nn.Module, images: np.ndarray, rows: np.ndarray, view: ViewSpec, out_dir, *,
                        seed: int, views: int, fields=CACHEABLE, logits_topk: int | None = None,
                        dtype: str = "float32", batch_size: int = 256, device=torch.device("cpu"),
                        progress: bool = True) -> dict:
    """Run ``teacher`` on views 0..views-1 of ``images[rows]`` and write the cache to ``out_dir`` atomically.

    ``dtype`` float32 (exact replay) or float16 (half the bytes); ``logits_topk`` keeps only the k largest
    logits per view (FKD's compression, for many classes).
    """
    from tqdm import tqdm

    if views < 1:
        raise ValueError(f"teacher_cache.views must be >= 1 to build a cache, got {views}")
    teacher.eval().to(device)
    t0 = time.perf_counter()
    arrays: dict[str, np.ndarray] = {}
    with atomic_dir(out_dir) as tmp:
        bar = tqdm(total=views * len(rows), desc="teacher views", disable=not progress, mininterval=2)
        for v in range(views):
            for start in range(0, len(rows), batch_size):
                batch_rows = rows[start:start + batch_size]
                x = train_views(images[batch_rows], batch_rows, view, seed=seed, stream=STREAM_KD_TEACHER, view=v)
                out = teacher(x.to(device))
                for name, value in _outputs(out, fields, logits_topk, dtype).items():
                    if name not in arrays:
                        arrays[name] = np.lib.format.open_memmap(tmp / f"{name}.npy", mode="w+", dtype=value.dtype,
                                                                 shape=(views, len(rows)) + value.shape[1:])
                    arrays[name][v, start:start + len(batch_rows)] = value
                bar.update(len(batch_rows))
        bar.close()
        for array in arrays.values():
            array.flush()
        np.save(tmp / "rows.npy", np.asarray(rows))
        meta = {"views": views, "n_images": int(len(rows)), "fields": sorted(arrays),
                "bytes": int(sum(a.nbytes for a in arrays.values())), "build_seconds": round(time.perf_counter() - t0, 2),
                "logits_topk": logits_topk}
        arrays.clear()
        write_json(tmp / "meta.json", meta)
    return meta


def _outputs(out: ModelOutput, fields, logits_topk: int | None, dtype: str) -> dict[str, np.ndarray]:
    cast = torch.float16 if dtype == "float16" else torch.float32
    result = {}
    for name in fields:
        value = getattr(out, name)
        if value is None:
            continue
        if name == "logits" and logits_topk and logits_topk < value.shape[1]:
            top = value.float().topk(logits_topk, dim=1)
            result["logits_topk_values"] = top.values.to(cast).cpu().numpy()
            result["logits_topk_indices"] = top.indices.to(torch.int32).cpu().numpy()
        else:
            result[name] = value.to(cast).cpu().numpy()
    return result


class TeacherCache:
    """Read side: ``outputs(positions, epoch)`` -> a ModelOutput of the cached teacher outputs (float32)."""

    def __init__(self, folder, seed: int, num_classes: int | None = None):
        self.folder = Path(folder)
        self.meta = read_json(self.folder / "meta.json")
        self.views, self.seed, self.num_classes = self.meta["views"], seed, num_classes
        self.arrays = {f: np.load(self.folder / f"{f}.npy", mmap_mode="r") for f in self.meta["fields"]}
        self.rows = np.load(self.folder / "rows.npy")

    def view_for(self, positions: np.ndarray, epoch: int) -> np.ndarray:
        """The recorded view each image shows in ``epoch``: ``epoch`` itself while it is < V (so V >= epochs
        replays the uncached run), else one of the V views drawn from (seed, epoch, image)."""
        if epoch < self.views:
            return np.full(len(positions), epoch)
        return np.array([np.random.default_rng([self.seed, epoch, int(p), 31]).integers(self.views) for p in positions])

    def outputs(self, positions: np.ndarray, epoch: int, device=torch.device("cpu")) -> ModelOutput:
        """Cached teacher outputs for the training images at ``positions`` (indices into ``rows``)."""
        v = self.view_for(positions, epoch)

        def take(name):
            return torch.from_numpy(np.ascontiguousarray(self.arrays[name][v, positions])).float().to(device)

        logits = None
        if "logits" in self.arrays:
            logits = take("logits")
        elif "logits_topk_values" in self.arrays:
            values, indices = take("logits_topk_values"), take("logits_topk_indices").long()
            floor = values.min(dim=1, keepdim=True).values - 10.0  # FKD: the other classes share a low logit
            logits = floor.expand(len(positions), self.num_classes).clone().scatter_(1, indices, values)
        embedding = take("embedding")
        pooled = take("pooled") if "pooled" in self.arrays else embedding
        return ModelOutput(feats=[], pooled=pooled, embedding=embedding, logits=logits)
