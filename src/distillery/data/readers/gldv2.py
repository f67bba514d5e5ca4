"""Google Landmarks v2 (clean) from ``train_clean.csv`` and the ``train/a/b/c/<id>.jpg`` image tree."""

from __future__ import annotations

import csv
from pathlib import Path

import pandas as pd

from distillery.data.registry import register_reader
from distillery.data.readers._common import (
    find_dir, find_file, frame, malformed, require_root, require_rows, to_int,
)

EXPECTED = "'<landmark_id>,<image id> <image id> ...' (columns landmark_id,images)"
HINT = "download train_clean.csv (GLDv2 metadata) to the root or to meta/"


@register_reader("gldv2")
def read_gldv2(root: Path, min_images: int = 1) -> pd.DataFrame:
    """Index GLDv2-clean (1,580,470 images, 81,313 landmarks) as split ``train``.

    ``train_clean.csv`` is read at the root (as published) or under ``meta/`` (whiten_mtd); one row per
    landmark, ``images`` a space-separated id list. Rows follow the CSV (landmarks, then images in listed
    order). ``path`` = ``train/<id[0]>/<id[1]>/<id[2]>/<id>.jpg``; ``label`` = the raw ``landmark_id``
    (whiten_mtd uses labels only to pair images of one landmark); ``image_id`` = the id.
    ``min_images`` drops landmarks with fewer images: whiten_mtd's training sampler keeps groups of
    >= 2 (``min_images=2``), its PCA fit uses every id (the default 1 keeps them all). Ids are split on
    any whitespace, so a doubled space does not create an empty id.
    """
    root = require_root(root, "gldv2")
    path = find_file(root, ["train_clean.csv", "meta/train_clean.csv"], "gldv2", HINT)
    find_dir(root, ["train"], "gldv2", "extract the GLDv2 train tar files into train/ (train/a/b/c/<id>.jpg)")
    columns = {"path": [], "label": [], "split": [], "image_id": []}
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.reader(f)
        header = next(reader, [])
        if "landmark_id" not in header or "images" not in header:
            raise malformed(path, 1, ",".join(header), "the header 'landmark_id,images'")
        col_id, col_images = header.index("landmark_id"), header.index("images")
        for lineno, row in enumerate(reader, start=2):
            if not row:
                continue
            line = ",".join(row)
            if len(row) != len(header):
                raise malformed(path, lineno, line, EXPECTED)
            landmark = to_int(row[col_id], path, lineno, line, EXPECTED)
            ids = row[col_images].split()
            if any(len(i) < 3 for i in ids):
                raise malformed(path, lineno, line, EXPECTED + " with ids of at least 3 characters")
            if len(ids) < min_images:
                continue
            columns["path"] += [f"train/{i[0]}/{i[1]}/{i[2]}/{i}.jpg" for i in ids]
            columns["label"] += [landmark] * len(ids)
            columns["image_id"] += ids
    columns["split"] = ["train"] * len(columns["path"])
    require_rows(len(columns["path"]), path)
    return frame(columns)
