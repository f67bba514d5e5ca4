"""The decoded dataset cache written by the ``prepare`` stage.

Layout of ``<out>/`` (written to a temporary folder, then renamed, so it is never half-written):
- ``images.npy``: N x H x W x C uint8, memory-mappable (``np.load(mmap_mode="r")``), every image resized
  once to ``store_size`` x ``store_size`` (or kept at its native size when all images share it);
- ``index.csv``: one row per image (the reader's columns; row i describes ``images[i]``);
- ``meta.json``: dataset name, image shape, counts per split, skipped corrupt images;
- ``gnd.json`` (revisited Oxford/Paris only): the reader's ``df.attrs["gnd"]`` with its ``easy``/``hard``/
  ``junk`` indexes re-mapped to the cached gallery rows (gallery row i of the cache = index i);
- ``groundtruth.json`` (video datasets, SVD): ``{"test": ..., "train": ...}``, the reader's
  ``df.attrs["groundtruth"]`` / ``["train_groundtruth"]`` (``{query id: {candidate id: label}}``).

Training reads images from this array and never decodes a file again.
"""

from __future__ import annotations

import gzip
import pickle
from functools import cached_property
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image, UnidentifiedImageError
from tqdm import tqdm

from distillery.data.registry import DatasetError, read_index
from distillery.utils.io import atomic_dir, read_json, write_json


class PreparedDataset:
    """Read-only view of a prepared cache: ``images`` (memmap N x H x W x C uint8) and ``index`` (DataFrame)."""

    def __init__(self, folder):
        self.folder = Path(folder)
        if not (self.folder / "images.npy").is_file():
            raise DatasetError(f"no prepared cache at {self.folder}; run `dvc repro prepare` (or stages/prepare.py) first")
        self.images = np.load(self.folder / "images.npy", mmap_mode="r")
        self.index = pd.read_csv(self.folder / "index.csv", dtype={"video_id": str})  # ids like "0123" stay text
        self.meta = read_json(self.folder / "meta.json")

    def rows(self, split: str) -> np.ndarray:
        """Row numbers of ``split`` in ``images``."""
        return np.flatnonzero(self.index["split"].to_numpy() == split)

    def labels(self, rows=None) -> np.ndarray:
        labels = self.index["label"].to_numpy()
        return labels if rows is None else labels[rows]

    @cached_property
    def gnd(self) -> list[dict] | None:
        """The revisited ground truth (one dict per query row, indexes into the gallery rows), or None."""
        path = self.folder / "gnd.json"
        return read_json(path) if path.is_file() else None

    @cached_property
    def video_groundtruth(self) -> dict | None:
        """A video dataset's test ground truth ``{query id: {candidate id: 0/1}}`` (SVD), or None."""
        path = self.folder / "groundtruth.json"
        return read_json(path)["test"] if path.is_file() else None


def load_array_file(path: Path) -> np.ndarray:
    """Decode an array-backed image file: idx (Fashion-MNIST) or a CIFAR python pickle -> N x H x W [x C] uint8."""
    name = path.name
    if "idx" in name:
        from distillery.data.readers.fashion_mnist import read_idx

        return read_idx(path)
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            batch = pickle.load(f, encoding="latin1")
        data = np.asarray(batch["data"], dtype=np.uint8)
    except (OSError, pickle.UnpicklingError, KeyError, EOFError) as err:
        raise DatasetError(f"cannot read array file {path} ({err}); re-download the dataset") from None
    return data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)


def _resize(image: np.ndarray, size: int | None) -> np.ndarray:
    if size is None or image.shape[:2] == (size, size):
        return image
    mode = "L" if image.shape[2] == 1 else "RGB"
    resized = Image.fromarray(image.squeeze(2) if mode == "L" else image, mode).resize((size, size), Image.BILINEAR)
    return np.asarray(resized).reshape(size, size, image.shape[2])


def _as_hwc(image: np.ndarray, channels: int) -> np.ndarray:
    if image.ndim == 2:
        image = image[:, :, None]
    if image.shape[2] != channels:
        image = np.repeat(image[:, :, :1], channels, axis=2) if channels == 3 else image[:, :, :1]
    return image


def _crop(img: Image.Image, box) -> Image.Image:
    """PIL's ``crop`` of the (x1, y1, x2, y2) box in original pixels (PIL rounds float coordinates), as the
    revisited Oxford/Paris protocol crops its queries."""
    return img.crop(tuple(float(v) for v in box))


def iter_images(df: pd.DataFrame, root: Path, channels: int, on_bad_image: str, crop_boxes: bool = False):
    """Yield (row, HxWxC uint8 image or None if corrupt and skipped) in index order; with ``crop_boxes`` a row
    with a ``bbox`` is cropped to it first."""
    arrays: dict[str, np.ndarray] = {}
    for row, rec in enumerate(df.itertuples(index=False)):
        if "index" in df.columns and not pd.isna(getattr(rec, "index", np.nan)):
            if rec.path not in arrays:
                arrays[rec.path] = load_array_file(root / rec.path)
            yield row, _as_hwc(arrays[rec.path][int(rec.index)], channels)
            continue
        try:
            with Image.open(root / rec.path) as img:
                box = getattr(rec, "bbox", None) if crop_boxes else None
                img = _crop(img, box) if isinstance(box, (tuple, list)) else img
                image = np.asarray(img.convert("L" if channels == 1 else "RGB"))
            yield row, _as_hwc(image, channels)
        except FileNotFoundError:
            raise DatasetError(f"image {root / rec.path} listed in the metadata is missing; restore it or fix "
                               f"the metadata file") from None
        except (UnidentifiedImageError, OSError, SyntaxError) as err:
            if on_bad_image == "fail":
                raise DatasetError(f"corrupt or truncated image {root / rec.path} ({err}); replace it, or set "
                                   f"data.<dataset>.on_bad_image: skip") from None
            yield row, None


def subsample_per_class(df: pd.DataFrame, max_per_class: dict[str, int | None]) -> pd.DataFrame:
    """Keep at most ``max_per_class[split]`` rows per (split, label), drawn with a fixed seed, in index order."""
    rng = np.random.default_rng(0)
    keep = np.ones(len(df), dtype=bool)
    for split, limit in max_per_class.items():
        if limit is None:
            continue
        for _, group in df[df["split"] == split].groupby("label"):
            if len(group) > limit:
                drop = rng.choice(group.index.to_numpy(), size=len(group) - limit, replace=False)
                keep[df.index.get_indexer(drop)] = False
    return df[keep].reset_index(drop=True)


def with_train_from(df: pd.DataFrame, train_from: dict | None) -> pd.DataFrame:
    """Replace the ``train`` split of ``df`` by the ``train`` split of dataset ``train_from["reader"]`` at
    ``train_from["root"]`` (paths made absolute), placed first; ``df.attrs`` are kept. Used for sets without a
    training split (revisited Oxford/Paris are trained on GLDv2)."""
    if not train_from:
        return df
    other = read_index(train_from["reader"], Path(train_from["root"]), **(train_from.get("reader_options") or {}))
    other = other[other["split"] == "train"]
    if len(other) == 0:
        raise DatasetError(f"train_from {train_from['reader']!r} at {train_from['root']} has no train split")
    other = other.assign(path=[str(Path(train_from["root"]) / p) for p in other["path"]])
    for column in set(df.columns) - set(other.columns):  # e.g. the queries' bbox: None, not NaN
        other[column] = pd.Series([None] * len(other), index=other.index, dtype=object)
    merged = pd.concat([other, df[df["split"] != "train"]], ignore_index=True)
    merged.attrs = dict(df.attrs)
    return merged


def _remap_gnd(gnd: list[dict], df: pd.DataFrame, keep: list[int]) -> list[dict]:
    """gnd indexes (positions among ``df``'s gallery rows) -> positions among the kept gallery rows; entries of
    images that were skipped are dropped. Other keys (``bbx``) are kept as plain lists."""
    gallery = np.flatnonzero(df["split"].to_numpy() == "gallery")
    kept = set(keep)
    new_index = {}
    for old, row in enumerate(gallery):
        if row in kept:
            new_index[old] = len(new_index)
    out = []
    for entry in gnd:
        item = {k: [float(v) for v in val] if k == "bbx" else val for k, val in entry.items()
                if k not in ("easy", "hard", "junk")}
        for key in ("easy", "hard", "junk"):
            item[key] = [new_index[int(i)] for i in entry.get(key, []) if int(i) in new_index]
        out.append(item)
    return out


def prepare_dataset(name: str, root, out, *, store_size: int | None = None, channels: int = 3,
                    on_bad_image: str = "fail", reader_options: dict | None = None,
                    max_per_class: dict[str, int | None] | None = None, progress: bool = True,
                    crop_queries: bool = True, train_from: dict | None = None) -> dict:
    """Read dataset ``name`` at ``root`` and write the decoded cache to ``out``; returns its meta dict.

    ``max_per_class`` (e.g. ``{"train": 600}``) keeps at most that many images per class of a split, chosen
    with a fixed seed (independent of the experiment seed) and kept in index order.
    ``crop_queries``: rows with a ``bbox`` (revisited Oxford/Paris queries) are cropped to it before resizing,
    as the standard protocol does (false: whole query images, as whiten_mtd's evaluation loader).
    ``train_from``: see :func:`with_train_from`. With a revisited ground truth (``df.attrs["gnd"]``) a
    ``gnd.json`` is written next to the index, indexes re-mapped to the cached gallery rows.
    """
    if on_bad_image not in ("fail", "skip"):
        raise ValueError(f"on_bad_image must be 'fail' or 'skip', got {on_bad_image!r}")
    root = Path(root)
    df = with_train_from(read_index(name, root, **(reader_options or {})), train_from)
    gnd = df.attrs.get("gnd")
    video_gt = {"test": df.attrs["groundtruth"], "train": df.attrs.get("train_groundtruth")} \
        if "groundtruth" in df.attrs else None
    df = subsample_per_class(df, max_per_class or {})
    if len(df) == 0:
        raise DatasetError(f"dataset {name!r} at {root} has no images for the chosen protocol")
    images, keep, skipped = None, [], []
    with atomic_dir(out) as tmp:
        for row, image in tqdm(iter_images(df, root, channels, on_bad_image, crop_queries), total=len(df),
                               desc=f"prepare {name}", disable=not progress, mininterval=2):
            if image is None:
                skipped.append(df["path"].iloc[row])
                continue
            image = _resize(image, store_size)
            if images is None:
                shape = (len(df),) + image.shape
                images = np.lib.format.open_memmap(tmp / "images.npy", mode="w+", dtype=np.uint8, shape=shape)
            if image.shape != images.shape[1:]:
                raise DatasetError(f"image {df['path'].iloc[row]} has shape {image.shape[:2]} but earlier ones "
                                   f"{images.shape[1:3]}; set data.<dataset>.store_size to resize them all")
            images[len(keep)] = image
            keep.append(row)
        if images is None:
            raise DatasetError(f"every image of {name!r} was unreadable")
        if skipped:  # shrink to the kept rows
            final = np.lib.format.open_memmap(tmp / "images.kept.npy", mode="w+", dtype=np.uint8,
                                              shape=(len(keep),) + images.shape[1:])
            final[:] = images[: len(keep)]
            del images, final
            (tmp / "images.kept.npy").replace(tmp / "images.npy")
        else:
            images.flush()
            del images
        index = df.iloc[keep].reset_index(drop=True)
        if "bbox" in index.columns:
            index["bbox"] = index["bbox"].map(lambda b: None if b is None else list(map(float, b)))
        index.to_csv(tmp / "index.csv", index=False)
        if gnd is not None:
            write_json(tmp / "gnd.json", _remap_gnd(gnd, df, keep))
        if video_gt is not None:
            write_json(tmp / "groundtruth.json", video_gt)
        meta = {"dataset": name, "n_images": len(index), "channels": channels,
                "image_size": store_size, "splits": index["split"].value_counts().sort_index().to_dict(),
                "n_classes_train": int(index.loc[index["split"] == "train", "label"].nunique()),
                "n_skipped_images": len(skipped), "skipped_images": skipped[:100]}
        write_json(tmp / "meta.json", meta)
    return meta
