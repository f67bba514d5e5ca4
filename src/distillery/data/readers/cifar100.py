"""CIFAR-100 from the python pickle layout (``cifar-100-python/{train,test}``) that torchvision downloads."""

from __future__ import annotations

import pickle
from pathlib import Path

import pandas as pd

from distillery.data.registry import DatasetError, register_reader
from distillery.data.readers._common import REDOWNLOAD, find_file, frame, require_root

HINT = "extract cifar-100-python.tar.gz (python version) so that cifar-100-python/train and /test exist"


def load_cifar_pickle(path: Path) -> dict:
    """The dict of one CIFAR python pickle (latin-1 strings); DatasetError when it is unreadable."""
    try:
        with open(path, "rb") as f:
            entry = pickle.load(f, encoding="latin1")
    except Exception as err:  # noqa: BLE001 -- a corrupt pickle can raise nearly anything

        raise DatasetError(f"{path}: not a readable CIFAR pickle ({err}); {REDOWNLOAD}") from None
    missing = [k for k in ("data", "fine_labels", "coarse_labels") if not isinstance(entry, dict) or k not in entry]
    if missing:
        raise DatasetError(f"{path}: the pickle has no {missing} entries; is this the CIFAR-100 (not CIFAR-10) "
                           f"python version? {REDOWNLOAD}")
    if len(entry["data"]) != len(entry["fine_labels"]) or len(entry["data"]) != len(entry["coarse_labels"]):
        raise DatasetError(f"{path}: {len(entry['data'])} images but {len(entry['fine_labels'])} fine and "
                           f"{len(entry['coarse_labels'])} coarse labels; {REDOWNLOAD}")
    return entry


@register_reader("cifar100")
def read_cifar100(root: Path) -> pd.DataFrame:
    """Index CIFAR-100: ``train`` 50,000 rows from the ``train`` pickle, ``test`` 10,000 from ``test``.

    ``root`` holds ``cifar-100-python/`` (torchvision's download root) or is that folder. ``path`` names the
    pickle file, ``index`` is the row in its ``data`` array (uint8 N x 3072, R then G then B planes of
    32 x 32), ``label`` = ``fine_labels`` (0..99), ``super_label`` = ``coarse_labels`` (0..19).
    """
    root = require_root(root, "cifar100")
    base = "" if not (root / "cifar-100-python").is_dir() else "cifar-100-python/"
    columns = {"path": [], "index": [], "label": [], "split": [], "super_label": []}
    for split in ("train", "test"):
        path = find_file(root, [base + split], "cifar100", HINT)
        entry = load_cifar_pickle(path)
        n = len(entry["fine_labels"])
        columns["path"] += [base + split] * n
        columns["index"] += list(range(n))
        columns["label"] += list(entry["fine_labels"])
        columns["split"] += [split] * n
        columns["super_label"] += list(entry["coarse_labels"])
    return frame(columns)
