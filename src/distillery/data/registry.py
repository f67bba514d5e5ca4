"""Dataset readers: ``read_index(name, root, **options)`` -> uniform pandas index (API.md section 4)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from distillery.utils.registry import Registry

READERS: Registry = Registry("dataset", "distillery.data.readers")
register_reader = READERS.register

INDEX_COLUMNS = ("path", "label", "split")
SPLITS = {"train", "test", "query", "gallery"}


class DatasetError(RuntimeError):
    """A dataset that is missing or malformed; the message names the file and how to fix it."""


def read_index(name: str, root, **options) -> pd.DataFrame:
    """Parse dataset ``name`` stored at ``root`` in its published layout.

    Returns a DataFrame with at least the columns ``path`` (relative to root), ``label`` (int) and
    ``split`` (train/test/query/gallery); array-backed sets add an ``index`` column (row in the array
    file named by ``path``). Raises DatasetError naming the missing or bad file.
    """
    reader = READERS.get(name)
    root = Path(root)
    if not root.exists():
        raise DatasetError(f"dataset root {str(root)!r} for {name!r} does not exist; set data.root in params.yaml "
                           f"to the folder that holds {name} in its published layout")
    df = reader(root, **options)
    missing = [c for c in INDEX_COLUMNS if c not in df.columns]
    if missing:
        raise DatasetError(f"reader {name!r} returned no column(s) {missing}")
    bad = set(df["split"].unique()) - SPLITS
    if bad:
        raise DatasetError(f"reader {name!r} returned unknown split(s) {sorted(bad)}")
    return df.reset_index(drop=True)


def available_datasets() -> list[str]:
    return READERS.names()
