"""The prepare stage's decoded cache: contents, subsampling, corrupt-image policy, nothing half-written."""

import numpy as np
import pytest

from distillery.data import DatasetError
from distillery.data.cache import PreparedDataset, prepare_dataset, subsample_per_class
from tests.data.fabricate import make_cub200


def test_fashion_mnist_cache_holds_decoded_images(fmnist_root, tmp_path):
    meta = prepare_dataset("fashion_mnist", fmnist_root, tmp_path / "out", channels=1, progress=False,
                           reader_options={"protocol": "open_set"})
    prepared = PreparedDataset(tmp_path / "out")
    assert prepared.images.shape == (90, 28, 28, 1) and prepared.images.dtype == np.uint8
    assert meta["splits"] == {"test": 30, "train": 60} and meta["n_classes_train"] == 5
    first = prepared.index.iloc[0]
    assert (first["split"], first["label"]) == ("train", 0)
    assert prepared.images[0, 0, 0, 0] == 230
    assert len(prepared.rows("test")) == 30


def test_subsample_per_class_is_fixed_and_ordered(fmnist_root):
    from distillery.data import read_index

    df = read_index("fashion_mnist", fmnist_root)
    a = subsample_per_class(df, {"train": 3, "test": None})
    b = subsample_per_class(df, {"train": 3, "test": None})
    assert a.equals(b)
    assert a[a["split"] == "train"].groupby("label").size().eq(3).all()
    assert (a[a["split"] == "test"].shape[0]) == 60
    assert a["index"][a["split"] == "train"].is_monotonic_increasing


def test_jpeg_dataset_resized_to_store_size(tmp_path):
    root = make_cub200(tmp_path / "cub", n_classes=3, per_class=2)
    prepare_dataset("cub200", root, tmp_path / "out", store_size=16, progress=False)
    prepared = PreparedDataset(tmp_path / "out")
    assert prepared.images.shape == (6, 16, 16, 3)


def _corrupt_first_image(root):
    first = sorted((root / "images").rglob("*.jpg"))[0]
    first.write_bytes(b"not a jpeg at all")
    return first


def test_corrupt_image_fails_without_output(tmp_path):
    root = make_cub200(tmp_path / "cub", n_classes=3, per_class=2)
    bad = _corrupt_first_image(root)
    with pytest.raises(DatasetError, match=f"corrupt or truncated image .*{bad.name}.*on_bad_image: skip"):
        prepare_dataset("cub200", root, tmp_path / "out", store_size=16, progress=False)
    assert not (tmp_path / "out").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["cub"]  # no temporary leftovers


def test_corrupt_image_skipped_and_counted(tmp_path):
    root = make_cub200(tmp_path / "cub", n_classes=3, per_class=2)
    _corrupt_first_image(root)
    meta = prepare_dataset("cub200", root, tmp_path / "out", store_size=16, on_bad_image="skip", progress=False)
    assert meta["n_skipped_images"] == 1 and meta["n_images"] == 5
    prepared = PreparedDataset(tmp_path / "out")
    assert prepared.images.shape[0] == 5 == len(prepared.index)


def test_missing_listed_image(tmp_path):
    root = make_cub200(tmp_path / "cub", n_classes=3, per_class=2)
    sorted((root / "images").rglob("*.jpg"))[-1].unlink()
    with pytest.raises(DatasetError, match="listed in the metadata is missing"):
        prepare_dataset("cub200", root, tmp_path / "out", store_size=16, progress=False)
    assert not (tmp_path / "out").exists()
