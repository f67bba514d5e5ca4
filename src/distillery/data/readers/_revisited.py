"""Shared reader for the revisited Oxford / Paris sets (``gnd_<name>.pkl`` + ``jpg/``)."""

from __future__ import annotations

import pickle
from pathlib import Path

import pandas as pd

from distillery.data.registry import DatasetError
from distillery.data.readers._common import REDOWNLOAD, find_dir, find_file, frame, require_root

GND_KEYS = ("easy", "hard", "junk")


def _check_gnd(path: Path, cfg) -> None:
    if not isinstance(cfg, dict) or any(k not in cfg for k in ("imlist", "qimlist", "gnd")):
        raise DatasetError(f"{path}: expected a dict with 'imlist', 'qimlist' and 'gnd'; {REDOWNLOAD}")
    if len(cfg["gnd"]) != len(cfg["qimlist"]):
        raise DatasetError(f"{path}: {len(cfg['qimlist'])} queries but {len(cfg['gnd'])} gnd entries; {REDOWNLOAD}")
    n = len(cfg["imlist"])
    for q, entry in enumerate(cfg["gnd"]):
        for key in GND_KEYS:
            if not isinstance(entry, dict) or key not in entry:
                raise DatasetError(f"{path}: gnd[{q}] has no {key!r} index list; {REDOWNLOAD}")
            bad = [int(i) for i in entry[key] if not 0 <= int(i) < n]
            if bad:
                raise DatasetError(f"{path}: gnd[{q}][{key!r}] indexes {bad[0]}, outside the {n} database "
                                   f"images; {REDOWNLOAD}")
        if "bbx" in entry and len(entry["bbx"]) != 4:
            raise DatasetError(f"{path}: gnd[{q}]['bbx'] must be [x1, y1, x2, y2]; {REDOWNLOAD}")


def read_revisited(root: Path, name: str) -> pd.DataFrame:
    """Index ``roxford5k`` / ``rparis6k``: queries (qimlist, 70) as split ``query``, then the database
    (imlist, 4,993 / 6,322) as ``gallery`` in imlist order, so gallery row i is the image that the gnd
    index i denotes.

    ``root`` holds ``<name>/gnd_<name>.pkl`` (the revisitop data folder, as whiten_mtd) or is ``<name>/``;
    images are ``<name>/jpg/<image>.jpg``. Labels: query row q -> q, gallery -> -1 (no classes; relevance is
    in the gnd). ``bbox`` = the query's ``bbx`` (x1, y1, x2, y2) in original pixels on query rows, None on
    gallery rows; whiten_mtd's loader does not crop queries to it (the standard protocol does).
    ``df.attrs["gnd"]`` = the pickle's gnd list (per query dicts with easy/hard/junk index lists, bbx).
    """
    root = require_root(root, name)
    base = f"{name}/" if (root / name).is_dir() else ""
    path = find_file(root, [f"{base}gnd_{name}.pkl"], name,
                     f"download gnd_{name}.pkl from the revisitop site next to the jpg/ folder")
    jpg = find_dir(root, [f"{base}jpg"], name, f"extract the {name} images into jpg/")
    try:
        with open(path, "rb") as f:
            cfg = pickle.load(f)
    except Exception as err:  # noqa: BLE001 -- a corrupt pickle can raise nearly anything
        raise DatasetError(f"{path}: not a readable pickle ({err}); {REDOWNLOAD}") from None
    _check_gnd(path, cfg)
    queries, database, gnd = list(cfg["qimlist"]), list(cfg["imlist"]), cfg["gnd"]
    boxes = [tuple(float(v) for v in g["bbx"]) if "bbx" in g else None for g in gnd]
    df = frame({
        "path": [f"{jpg}/{im}.jpg" for im in queries + database],
        "label": list(range(len(queries))) + [-1] * len(database),
        "split": ["query"] * len(queries) + ["gallery"] * len(database),
        "bbox": boxes + [None] * len(database),
    })
    df.attrs["gnd"] = gnd
    return df
