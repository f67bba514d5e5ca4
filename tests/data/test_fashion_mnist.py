"""Fashion-MNIST reader on fabricated idx files (gzipped and plain, flat and torchvision layouts)."""

import gzip

import numpy as np
import pytest

from distillery.data import DatasetError, read_index
from distillery.data.readers.fashion_mnist import read_idx
from tests.data.fabricate import make_fashion_mnist


def test_standard_protocol_counts_labels_and_rows(fmnist_root):
    df = read_index("fashion_mnist", fmnist_root)
    assert df["split"].value_counts().to_dict() == {"train": 120, "test": 60}
    assert sorted(df["label"].unique()) == list(range(10))
    train = df[df["split"] == "train"]
    assert train["path"].iloc[0] == "train-images-idx3-ubyte.gz"
    assert list(train["index"]) == list(range(120))
    assert list(train["label"][:11]) == [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 0]


def test_open_set_protocol_splits_classes(fmnist_root):
    df = read_index("fashion_mnist", fmnist_root, protocol="open_set")
    assert set(df.loc[df["split"] == "train", "label"]) == {0, 1, 2, 3, 4}
    assert set(df.loc[df["split"] == "test", "label"]) == {5, 6, 7, 8, 9}
    assert df["split"].value_counts().to_dict() == {"train": 60, "test": 30}


def test_plain_files_in_torchvision_layout(tmp_path):
    make_fashion_mnist(tmp_path / "FashionMNIST" / "raw", gz=False, train_per_class=2, test_per_class=1)
    df = read_index("fashion_mnist", tmp_path)
    assert len(df) == 30 and df["path"].iloc[0] == "FashionMNIST/raw/train-images-idx3-ubyte"


def test_read_idx_values(fmnist_root):
    images = read_idx(fmnist_root / "t10k-images-idx3-ubyte.gz")
    assert images.shape == (60, 28, 28) and images.dtype == np.uint8
    assert images[0, 0, 0] == 230  # class 0: bright square at the top-left


def test_truncated_file_is_named(fmnist_root):
    path = fmnist_root / "train-labels-idx1-ubyte.gz"
    path.write_bytes(gzip.compress(gzip.decompress(path.read_bytes())[:-5]))
    with pytest.raises(DatasetError, match="train-labels-idx1-ubyte.gz is not a valid idx file.*truncated"):
        read_index("fashion_mnist", fmnist_root)


def test_labels_disagreeing_with_images(fmnist_root):
    other = make_fashion_mnist(fmnist_root.parent / "other", train_per_class=3)
    (fmnist_root / "train-labels-idx1-ubyte.gz").write_bytes((other / "train-labels-idx1-ubyte.gz").read_bytes())
    with pytest.raises(DatasetError, match="holds 120 images but train-labels-idx1-ubyte holds 30 labels"):
        read_index("fashion_mnist", fmnist_root)


def test_unknown_protocol(fmnist_root):
    with pytest.raises(DatasetError, match="unknown Fashion-MNIST protocol"):
        read_index("fashion_mnist", fmnist_root, protocol="closed")
