"""CUB-200-2011 from the published tarball layout (``images.txt`` + ``image_class_labels.txt`` + split file)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from distillery.data.registry import DatasetError, register_reader
from distillery.data.readers._common import (
    REDOWNLOAD, dense_rank, find_dir, find_file, frame, malformed, require_root, require_rows, split_rows, to_int,
)

PROTOCOLS = ("closed_set", "open_set")
HINT = "the CUB_200_2011 folder from CUB_200_2011.tgz must hold images.txt, image_class_labels.txt, " \
       "train_test_split.txt and images/"


def _id_table(path: Path, expected: str, n_values: int, cast=int) -> dict[int, tuple]:
    """``{image_id: values}`` from an 'id v1 .. vn' file; DatasetError on a malformed line."""
    out = {}
    for lineno, line, fields in split_rows(path, 1 + n_values, expected):
        key = to_int(fields[0], path, lineno, line, expected)
        try:
            out[key] = tuple(cast(v) for v in fields[1:])
        except ValueError:
            raise malformed(path, lineno, line, expected) from None
    return out


def _lookup(table: dict, image_id: int, path: Path):
    if image_id not in table:
        raise DatasetError(f"{path}: no line for image id {image_id} listed in images.txt; "
                           "use the files of one CUB_200_2011.tgz release together")
    return table[image_id]


@register_reader("cub200")
def read_cub200(root: Path, protocol: str = "closed_set") -> pd.DataFrame:
    """Index CUB-200-2011 (11,788 images, 200 classes) under ``protocol``.

    ``root`` is the ``CUB_200_2011`` folder or its parent (where the tgz extracts it). Rows follow
    images.txt. ``label`` = rank of the class id among all class ids (= class_id - 1 = the ImageFolder index
    of the sorted ``NNN.Name`` folders) in both protocols:

    - ``closed_set`` (default; the D3still presets and the SDD/mdistiller classification split): split from
      train_test_split.txt, 1 -> ``train`` (5,994), 0 -> ``test`` (5,794); all 200 classes in both.
    - ``open_set`` (the DML protocol, S2SD): the sorted class ids are cut in half, first half (classes
      1-100, labels 0-99) -> ``train`` (5,864), the rest (101-200) -> ``test`` (5,924); test labels keep
      100-199 (not re-indexed, as in S2SD).

    For retrieval the ``test`` rows are both query and gallery (the evaluator removes each query by index).
    Extra columns: ``image_id`` (CUB's 1-based id), ``cls_split`` (train/test from train_test_split.txt
    whatever the protocol) and, when bounding_boxes.txt exists, ``bbox`` = (x1, y1, x2, y2) in pixels
    (converted from the file's x, y, width, height).
    """
    if protocol not in PROTOCOLS:
        raise ValueError(f"cub200: unknown protocol {protocol!r} (valid: {', '.join(PROTOCOLS)})")
    root = require_root(root, "cub200")
    base = "" if (root / "images.txt").is_file() or not (root / "CUB_200_2011").is_dir() else "CUB_200_2011/"
    images_txt = find_file(root, [base + "images.txt"], "cub200", HINT)
    labels_txt = find_file(root, [base + "image_class_labels.txt"], "cub200", HINT)
    split_txt = find_file(root, [base + "train_test_split.txt"], "cub200", HINT)
    find_dir(root, [base + "images"], "cub200", HINT)

    images = _id_table(images_txt, "'<image_id> <class_folder>/<file>.jpg'", 1, cast=str)
    classes = _id_table(labels_txt, "'<image_id> <class_id>'", 1)
    is_train = _id_table(split_txt, "'<image_id> <is_training 0|1>'", 1)
    bbox_txt = root / (base + "bounding_boxes.txt")
    boxes = _id_table(bbox_txt, "'<image_id> <x> <y> <width> <height>'", 4, cast=float) \
        if bbox_txt.is_file() else None

    ids = list(images)
    require_rows(len(ids), images_txt)
    class_ids = np.array([_lookup(classes, i, labels_txt)[0] for i in ids], dtype=np.int64)
    flags = [_lookup(is_train, i, split_txt)[0] for i in ids]
    bad = [f for f in flags if f not in (0, 1)]
    if bad:
        raise DatasetError(f"{split_txt}: is_training must be 0 or 1, found {bad[0]}; {REDOWNLOAD}")
    cls_split = ["train" if f == 1 else "test" for f in flags]
    if protocol == "closed_set":
        split = cls_split
    else:
        ordered = np.unique(class_ids)
        train_classes = set(ordered[: len(ordered) // 2].tolist())
        split = ["train" if c in train_classes else "test" for c in class_ids.tolist()]
    columns = {
        "path": [f"{base}images/{images[i][0]}" for i in ids],
        "label": dense_rank(class_ids),
        "split": split,
        "image_id": ids,
        "cls_split": cls_split,
    }
    if boxes is not None:
        columns["bbox"] = [_xywh_to_xyxy(_lookup(boxes, i, bbox_txt)) for i in ids]
    return frame(columns)


def _xywh_to_xyxy(box: tuple) -> tuple:
    x, y, w, h = box
    return (x, y, x + w, y + h)
