"""Fashion-MNIST in its published idx layout (as Debian's ``dataset-fashion-mnist`` and torchvision ship it).

Files (gzipped or not; directly under ``root`` or under ``root/FashionMNIST/raw`` as torchvision stores them):
``train-images-idx3-ubyte``, ``train-labels-idx1-ubyte``, ``t10k-images-idx3-ubyte``, ``t10k-labels-idx1-ubyte``.
``path`` names the image array file and ``index`` the row in it.

Protocols:
- ``standard`` (default): all 10 classes, the official 60,000 train / 10,000 test split (classification).
- ``open_set``: retrieval as in the seeds' open-set benchmarks: train = train images of ``train_classes``
  (default 0-4), test = test images of the other classes (5-9); query = gallery = test.
"""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import pandas as pd

from distillery.data.readers._common import require_root
from distillery.data.registry import DatasetError, register_reader

FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
IDX_DTYPE = {0x08: np.uint8}


def find_idx_file(root: Path, stem: str) -> Path:
    """The idx file ``stem`` (plain or ``.gz``) under root or root/FashionMNIST/raw; DatasetError if absent."""
    for folder in (root, root / "FashionMNIST" / "raw"):
        for name in (stem, stem + ".gz"):
            if (folder / name).is_file():
                return folder / name
    raise DatasetError(f"fashion_mnist: file {stem}[.gz] is missing under {root}; install Debian's "
                       f"dataset-fashion-mnist or point data.<name>.root at the folder holding the idx files")


def read_idx(path: Path) -> np.ndarray:
    """Decode an idx file (magic 0x0000 <dtype> <ndim>, big-endian dims, raw data) into a numpy array."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            raw = f.read()
        zero, dtype_code, ndim = struct.unpack(">HBB", raw[:4])
        if zero != 0 or dtype_code not in IDX_DTYPE:
            raise ValueError("bad magic number")
        dims = struct.unpack(">" + "I" * ndim, raw[4:4 + 4 * ndim])
        data = np.frombuffer(raw, dtype=IDX_DTYPE[dtype_code], offset=4 + 4 * ndim)
        if data.size != int(np.prod(dims)):
            raise ValueError(f"expected {int(np.prod(dims))} values, found {data.size} (truncated file?)")
    except (OSError, EOFError, ValueError, struct.error) as err:
        raise DatasetError(f"Fashion-MNIST file {path} is not a valid idx file ({err}); re-install or "
                           f"re-download it") from None
    return data.reshape(dims)


@register_reader("fashion_mnist")
def read_fashion_mnist(root: Path, protocol: str = "standard", train_classes=(0, 1, 2, 3, 4)) -> pd.DataFrame:
    """Index of Fashion-MNIST: columns path (idx image file), index (row), label (0-9), split."""
    root = require_root(root, "fashion_mnist")
    if protocol not in ("standard", "open_set"):
        raise DatasetError(f"unknown Fashion-MNIST protocol {protocol!r}; use 'standard' or 'open_set'")
    frames = []
    for split, (image_stem, label_stem) in FILES.items():
        image_file = find_idx_file(root, image_stem)
        labels = read_idx(find_idx_file(root, label_stem)).astype(np.int64)
        n_images = _idx_length(image_file)
        if n_images != len(labels):
            raise DatasetError(f"{image_file.name} holds {n_images} images but {label_stem} holds {len(labels)} "
                               f"labels; the two files must come from the same release")
        frames.append(pd.DataFrame({"path": str(image_file.relative_to(root)), "index": np.arange(len(labels)),
                                    "label": labels, "split": split}))
    df = pd.concat(frames, ignore_index=True)
    if protocol == "open_set":
        seen = df["label"].isin(list(train_classes))
        df = df[(seen & (df["split"] == "train")) | (~seen & (df["split"] == "test"))]
    return df.reset_index(drop=True)


def _idx_length(path: Path) -> int:
    """Number of items in an idx file, read from its header only."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        header = f.read(8)
    if len(header) < 8:
        raise DatasetError(f"Fashion-MNIST file {path} is truncated; re-install or re-download it")
    return struct.unpack(">I", header[4:8])[0]


def load_images(root: Path, relative_path: str) -> np.ndarray:
    """All images of one idx file as an N x 28 x 28 uint8 array."""
    return read_idx(Path(root) / relative_path)
