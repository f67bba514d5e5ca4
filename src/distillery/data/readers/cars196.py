"""Stanford Cars-196: S2SD's one-folder-per-class ``images/`` tree, or the published ``cars_annos.mat``."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from distillery.data.registry import DatasetError, register_reader
from distillery.data.readers._common import REDOWNLOAD, dense_rank, frame, require_root

HINT = ("expected images/<class name>/<file> (the layout S2SD uses) or cars_annos.mat with car_ims/ "
        "(the published layout)")


def _split_halves(labels: np.ndarray) -> list[str]:
    """First half of the sorted class labels -> train, the rest -> test (S2SD's keys[:n // 2])."""
    ordered = np.unique(labels)
    train = set(ordered[: len(ordered) // 2].tolist())
    return ["train" if c in train else "test" for c in labels.tolist()]


def _read_folders(root: Path) -> dict:
    classes = sorted(p.name for p in (root / "images").iterdir() if p.is_dir() and not p.name.startswith("."))
    paths, labels = [], []
    for label, name in enumerate(classes):
        files = sorted(f.name for f in (root / "images" / name).iterdir() if not f.name.startswith("."))
        paths += [f"images/{name}/{f}" for f in files]
        labels += [label] * len(files)
    if not paths:
        raise DatasetError(f"cars196: {root / 'images'} holds no class folder with images; {HINT}")
    labels = np.asarray(labels, dtype=np.int64)
    return {"path": paths, "label": labels, "split": _split_halves(labels)}


def _read_annos(path: Path) -> dict:
    from scipy.io import loadmat  # only needed for this layout

    try:
        annos = np.atleast_1d(loadmat(path, squeeze_me=True)["annotations"])
        paths = [str(a["relative_im_path"]) for a in annos]
        classes = np.asarray([int(a["class"]) for a in annos], dtype=np.int64)
        boxes = [tuple(float(a[f"bbox_{k}"]) for k in ("x1", "y1", "x2", "y2")) for a in annos]
    except Exception as err:  # noqa: BLE001 -- scipy raises many types on a corrupt .mat
        raise DatasetError(f"{path}: not a cars_annos.mat with an 'annotations' struct "
                           f"(relative_im_path, bbox_*, class) ({err}); {REDOWNLOAD}") from None
    if not paths:
        raise DatasetError(f"{path}: lists no images; {REDOWNLOAD}")
    top = paths[0].split("/")[0]
    if "/" in paths[0] and not (path.parent / top).is_dir():
        raise DatasetError(f"cars196: missing image folder {str(path.parent / top)!r}; unpack car_ims.tgz "
                           "next to cars_annos.mat")
    labels = dense_rank(classes)
    return {"path": paths, "label": labels, "split": _split_halves(labels), "bbox": boxes}


@register_reader("cars196")
def read_cars196(root: Path) -> pd.DataFrame:
    """Index Cars-196 with the DML split: first 98 classes ``train`` (8,054 images), last 98 ``test`` (8,131;
    query = gallery = test). Labels are not re-indexed for test (98..195), as in S2SD.

    - ``root/images/<class folder>/`` (S2SD, preferred when present): label = rank of the folder name in
      Python string order; every file of a folder, sorted by name. Deviation: names starting with '.'
      (e.g. macOS ``._*`` files) are skipped, S2SD would read them as images.
    - ``root/cars_annos.mat`` + ``car_ims/`` (published): label = class - 1 (rank of the class id), with a
      ``bbox`` = (x1, y1, x2, y2) column; the mat's ``test`` flag (the classification split) is not used.
      Whether S2SD's folder-name order equals this class-id order cannot be verified from its repo.
    """
    root = require_root(root, "cars196")
    if (root / "images").is_dir():
        return frame(_read_folders(root))
    if (root / "cars_annos.mat").is_file():
        return frame(_read_annos(root / "cars_annos.mat"))
    raise DatasetError(f"cars196: neither {str(root / 'images')!r} nor {str(root / 'cars_annos.mat')!r} exists; "
                       f"{HINT}")
