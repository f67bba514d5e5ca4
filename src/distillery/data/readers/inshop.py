"""DeepFashion In-Shop Clothes Retrieval from the published ``list_eval_partition.txt``."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd

from distillery.data.registry import DatasetError, register_reader
from distillery.data.readers._common import (
    REDOWNLOAD, dense_rank, find_dir, find_file, frame, malformed, read_lines, require_root, require_rows,
)

ITEM = re.compile(r"id_(\d+)")
STATUSES = ("train", "query", "gallery")
EXPECTED = "'<image_name> id_<digits> train|query|gallery'"
HINT = "In-Shop needs Eval/list_eval_partition.txt (from the benchmark's Eval/ folder) and the images"


@register_reader("inshop")
def read_inshop(root: Path) -> pd.DataFrame:
    """Index In-Shop (train 25,882 images / 3,997 items, query 14,218, gallery 12,612).

    Reads ``Eval/list_eval_partition.txt`` (or the same file directly under root): line 1 the image count
    (checked), line 2 the header, then ``image_name item_id evaluation_status``. Images are found with or
    without the ``Img/`` level (``Img/img/...`` as published, or ``img/...``); ``path`` includes it.
    Labels follow D3still: item ``id_XXXXXXXX`` -> pid = int(XXXXXXXX) - 1; ``train`` labels are then
    relabelled 0..C-1 in ascending pid order, ``query``/``gallery`` keep the raw pid (query and gallery
    share items, evaluated without self-exclusion).
    """
    root = require_root(root, "inshop")
    path = find_file(root, ["Eval/list_eval_partition.txt", "list_eval_partition.txt"], "inshop", HINT)
    lines = read_lines(path)
    if len(lines) < 2:
        raise DatasetError(f"{path}: expected a count line and a header line, the file has {len(lines)} "
                           f"line(s); {REDOWNLOAD}")
    names, pids, splits = [], [], []
    for lineno, line in enumerate(lines[2:], start=3):
        fields = line.split()
        if not fields:
            continue
        match = ITEM.fullmatch(fields[1]) if len(fields) == 3 else None
        if match is None or fields[2] not in STATUSES:
            raise malformed(path, lineno, line, EXPECTED)
        names.append(fields[0])
        pids.append(int(match.group(1)) - 1)
        splits.append(fields[2])
    require_rows(len(names), path)
    count = lines[0].strip()
    if not count.isdigit():
        raise malformed(path, 1, lines[0], "the number of images")
    if int(count) != len(names):
        raise DatasetError(f"{path}: line 1 announces {int(count)} images but {len(names)} are listed; "
                           f"the file is truncated, {REDOWNLOAD}")

    top = names[0].split("/")[0]
    prefix = find_dir(root, [f"Img/{top}", top], "inshop", "unpack Img/img.zip next to Eval/")[: -len(top)]
    pids = np.asarray(pids, dtype=np.int64)
    splits = np.asarray(splits)
    labels = pids.copy()
    train = splits == "train"
    labels[train] = dense_rank(pids[train])
    return frame({"path": [prefix + n for n in names], "label": labels, "split": splits})
