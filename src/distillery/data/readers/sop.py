"""Stanford Online Products from the published ``Ebay_train.txt`` / ``Ebay_test.txt``."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from distillery.data.registry import register_reader
from distillery.data.readers._common import (
    dense_rank, find_dir, find_file, frame, malformed, read_lines, require_root, require_rows, split_rows, to_int,
)

EXPECTED = "'<image_id> <class_id> <super_class_id> <path>'"
HINT = "Stanford_Online_Products holds Ebay_train.txt and Ebay_test.txt (or Info_Files/ as S2SD moves them)"


def _read_list(path: Path) -> tuple[list[str], list[int], list[int]]:
    header = (read_lines(path)[:1] or [""])[0]
    if header.split()[:1] != ["image_id"]:
        raise malformed(path, 1, header, "the header 'image_id class_id super_class_id path'")
    paths, classes, supers = [], [], []
    for lineno, line, fields in split_rows(path, 4, EXPECTED, skip=1):
        classes.append(to_int(fields[1], path, lineno, line, EXPECTED))
        supers.append(to_int(fields[2], path, lineno, line, EXPECTED))
        paths.append(fields[3])
    require_rows(len(paths), path)
    return paths, classes, supers


@register_reader("sop")
def read_sop(root: Path) -> pd.DataFrame:
    """Index SOP: ``train`` = Ebay_train.txt (59,551 images, 11,318 classes), ``test`` = Ebay_test.txt (60,502,
    11,316 classes; query = gallery = test, self removed by index at evaluation).

    The list files (header line ``image_id class_id super_class_id path``) are read at root or under
    ``Info_Files/``; images at root (``bicycle_final/...``, as published) or under ``images/`` (S2SD).
    ``label`` = class_id - 1, as D3still and S2SD (train 0..11317, test 11318..22633 not re-indexed); train
    labels are computed as the rank of class_id among train classes, identical on the published files.
    ``super_label`` = super_class_id - 1 (0..11).
    """
    root = require_root(root, "sop")
    parts = {}
    for split, name in (("train", "Ebay_train.txt"), ("test", "Ebay_test.txt")):
        parts[split] = _read_list(find_file(root, [name, f"Info_Files/{name}"], "sop", HINT))
    top = parts["train"][0][0].split("/")[0]
    prefix = find_dir(root, [top, f"images/{top}"], "sop", "unpack the <category>_final/ image folders")
    prefix = prefix[: -len(top)]

    columns = {"path": [], "label": [], "split": [], "super_label": []}
    for split, (paths, classes, supers) in parts.items():
        classes = np.asarray(classes, dtype=np.int64)
        columns["path"] += [prefix + p for p in paths]
        columns["label"] += (dense_rank(classes) if split == "train" else classes - 1).tolist()
        columns["split"] += [split] * len(paths)
        columns["super_label"] += [s - 1 for s in supers]
    return frame(columns)
