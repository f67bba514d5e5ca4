"""MSMT17 (V1 or V2) from the published ``list_{train,val,query,gallery}.txt`` files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from distillery.data.registry import register_reader
from distillery.data.readers._common import (
    dense_rank, find_dir, find_file, frame, malformed, require_root, require_rows, split_rows, to_int,
)

EXPECTED = "'<pid>/<pid>_<index>_<cam>_<...>.jpg <pid>'"
HINT = "the MSMT17_V1 (or MSMT17_V2) folder holds list_train.txt, list_val.txt, list_query.txt, list_gallery.txt"
DIRS = {"train": ["train", "mask_train_v2"], "test": ["test", "mask_test_v2"]}


def _read_list(path: Path) -> tuple[list[str], list[int], list[int]]:
    """(relative image paths, pids, 0-based cameras) of one list file."""
    names, pids, cams = [], [], []
    for lineno, line, fields in split_rows(path, 2, EXPECTED):
        parts = fields[0].rsplit("/", 1)[-1].split("_")
        if len(parts) < 3:
            raise malformed(path, lineno, line, EXPECTED)
        cams.append(to_int(parts[2], path, lineno, line, EXPECTED) - 1)
        pids.append(to_int(fields[1], path, lineno, line, EXPECTED))
        names.append(fields[0])
    require_rows(len(names), path)
    return names, pids, cams


@register_reader("msmt17")
def read_msmt17(root: Path, include_val: bool = True) -> pd.DataFrame:
    """Index MSMT17: ``train`` = list_train.txt + list_val.txt (32,621 images, 1,041 ids; ``include_val=False``
    keeps list_train.txt only, 30,248), ``query`` = list_query.txt (11,659), ``gallery`` = list_gallery.txt
    (82,161).

    List lines are ``<pid>/<file>.jpg <pid>``, relative to ``train/`` (train, val) or ``test/`` (query,
    gallery); V2's ``mask_train_v2/`` and ``mask_test_v2/`` are accepted too. ``cam`` = third ``_`` field
    of the file name minus 1 (0..14); the evaluator drops gallery items sharing the query's pid and cam.
    ``train`` labels are the pids relabelled 0..C-1 in ascending order (identical to the listed pids on
    the published files); ``query``/``gallery`` keep the raw pids.
    """
    root = require_root(root, "msmt17")
    sources = [("train", "list_train.txt", "train"), ("query", "list_query.txt", "test"),
               ("gallery", "list_gallery.txt", "test")]
    if include_val:
        sources.insert(1, ("train", "list_val.txt", "train"))
    columns = {"path": [], "label": [], "split": [], "cam": []}
    for split, name, folder in sources:
        names, pids, cams = _read_list(find_file(root, [name], "msmt17", HINT))
        prefix = find_dir(root, DIRS[folder], "msmt17", "unpack the images next to the list files")
        columns["path"] += [f"{prefix}/{n}" for n in names]
        columns["label"] += pids
        columns["split"] += [split] * len(names)
        columns["cam"] += cams
    labels = np.asarray(columns["label"], dtype=np.int64)
    train = np.asarray(columns["split"]) == "train"
    labels[train] = dense_rank(labels[train])
    columns["label"] = labels
    return frame(columns)
