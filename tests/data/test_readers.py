"""Dataset readers on miniatures written in the published layouts (tests/data/fabricate.py)."""

from __future__ import annotations

import pickle
import shutil

import numpy as np
import pytest

from distillery.data import DatasetError, available_datasets, read_index
from distillery.data.registry import READERS
from tests.data import fabricate as fab

NAMES = sorted(fab.MAKERS)


def counts(df, column="split"):
    return df[column].value_counts().to_dict()


def rows(df, split):
    return df[df["split"] == split]


# ---------------------------------------------------------------- every reader
def test_all_readers_registered():
    assert set(NAMES) <= set(available_datasets())


@pytest.mark.parametrize("name", NAMES)
def test_paths_are_root_relative_files(tmp_path, name):
    root = fab.MAKERS[name](tmp_path / name)
    df = read_index(name, root)
    assert len(df) > 0 and list(df.index) == list(range(len(df)))
    assert df["label"].dtype == np.int64
    assert all((root / p).is_file() for p in df["path"])
    assert not any(p.startswith("/") for p in df["path"])


@pytest.mark.parametrize("name", NAMES)
def test_missing_root_names_the_folder(tmp_path, name):
    with pytest.raises(DatasetError, match="does_not_exist.*does not exist"):
        read_index(name, tmp_path / "does_not_exist")
    with pytest.raises(DatasetError, match=f"{name}: dataset root .*does_not_exist.*does not exist"):
        READERS.get(name)(tmp_path / "does_not_exist")  # the reader itself checks too


@pytest.mark.parametrize("name", NAMES)
def test_empty_root_names_a_missing_file(tmp_path, name):
    with pytest.raises(DatasetError, match=r"missing|neither|no class"):
        read_index(name, tmp_path)


# ---------------------------------------------------------------- cub200
@pytest.fixture(scope="module")
def cub_root(tmp_path_factory):
    return fab.make_cub200(tmp_path_factory.mktemp("cub"))


def test_cub_closed_set_is_the_official_split(cub_root):
    df = read_index("cub200", cub_root)  # default protocol
    assert counts(df) == {"train": 24, "test": 24}
    assert sorted(rows(df, "train")["label"].unique()) == list(range(6))
    assert sorted(rows(df, "test")["label"].unique()) == list(range(6))
    first = df.iloc[0]
    assert first["path"] == "images/001.Class_001/Class_001_0000_1.jpg"
    assert (first["label"], first["split"], first["image_id"]) == (0, "train", 1)
    assert df.iloc[1]["split"] == "test"
    assert (df["cls_split"] == df["split"]).all()
    assert df.iloc[0]["bbox"] == (1.0, 2.0, 11.0, 14.0)  # x, y, w, h = 1, 2, 10, 12
    assert df.equals(read_index("cub200", cub_root, protocol="closed_set"))


def test_cub_open_set_splits_classes_in_half(cub_root):
    df = read_index("cub200", cub_root, protocol="open_set")
    assert counts(df) == {"train": 24, "test": 24}
    assert sorted(rows(df, "train")["label"].unique()) == [0, 1, 2]
    assert sorted(rows(df, "test")["label"].unique()) == [3, 4, 5]  # not re-indexed (S2SD)
    assert counts(rows(df, "train"), "cls_split") == {"train": 12, "test": 12}


def test_cub_nested_root_prefixes_paths(tmp_path):
    root = fab.make_cub200(tmp_path, n_classes=2, per_class=2, size=8, nested=True)
    df = read_index("cub200", root)
    assert df["path"].str.startswith("CUB_200_2011/images/").all()
    assert df["label"].tolist() == [0, 0, 1, 1]


def test_cub_errors(tmp_path):
    root = fab.make_cub200(tmp_path, n_classes=2, per_class=2, size=8)
    with pytest.raises(ValueError, match="closed_set, open_set"):
        read_index("cub200", root, protocol="dml")
    (root / "train_test_split.txt").write_text("1 1\n2 x\n")
    with pytest.raises(DatasetError, match=r"train_test_split.txt, line 2: .*'2 x'"):
        read_index("cub200", root)
    (root / "train_test_split.txt").write_text("1 1\n2 0\n3 1\n")
    with pytest.raises(DatasetError, match=r"train_test_split.txt: no line for image id 4"):
        read_index("cub200", root)
    (root / "train_test_split.txt").unlink()
    with pytest.raises(DatasetError, match=r"missing metadata file .*train_test_split.txt.*CUB_200_2011.tgz"):
        read_index("cub200", root)


# ---------------------------------------------------------------- inshop
@pytest.mark.parametrize("img_level", [True, False])
def test_inshop_splits_and_labels(tmp_path, img_level):
    df = read_index("inshop", fab.make_inshop(tmp_path, img_level=img_level))
    assert counts(df) == {"train": 6, "query": 2, "gallery": 4}
    assert rows(df, "train")["label"].tolist() == [0, 0, 1, 1, 2, 2]  # items 3, 5, 9 relabelled
    assert rows(df, "query")["label"].tolist() == [1, 6]  # raw item number - 1
    assert rows(df, "gallery")["label"].tolist() == [1, 1, 6, 6]
    prefix = "Img/img/" if img_level else "img/"
    assert df["path"].str.startswith(prefix + "WOMEN/Dresses/id_0000000").all()


def test_inshop_errors(tmp_path):
    root = fab.make_inshop(tmp_path)
    listing = root / "Eval" / "list_eval_partition.txt"
    lines = listing.read_text().splitlines()
    listing.write_text("\n".join(lines[:-1]) + "\n")
    with pytest.raises(DatasetError, match="line 1 announces 12 images but 11 are listed"):
        read_index("inshop", root)
    listing.write_text("\n".join(lines[:3] + [lines[3].replace("train", "val")] + lines[4:]))
    with pytest.raises(DatasetError, match=r"list_eval_partition.txt, line 4: expected .*train\|query\|gallery"):
        read_index("inshop", root)
    shutil.rmtree(root / "Img")
    listing.write_text("\n".join(lines))
    with pytest.raises(DatasetError, match=r"missing image folder .*Img/img.*img"):
        read_index("inshop", root)
    listing.unlink()
    with pytest.raises(DatasetError, match=r"Eval/list_eval_partition.txt"):
        read_index("inshop", root)


# ---------------------------------------------------------------- sop
@pytest.mark.parametrize("info_files", [False, True])
def test_sop_labels_and_super_labels(tmp_path, info_files):
    df = read_index("sop", fab.make_sop(tmp_path, info_files=info_files))
    assert counts(df) == {"train": 6, "test": 6}
    assert rows(df, "train")["label"].tolist() == [0, 0, 1, 1, 2, 2]
    assert rows(df, "test")["label"].tolist() == [3, 3, 4, 4, 5, 5]  # class_id - 1
    assert df["super_label"].tolist() == [0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 2, 2]
    assert df["path"].iloc[0] == ("images/" if info_files else "") + "bicycle_final/101_0.JPG"


def test_sop_errors(tmp_path):
    root = fab.make_sop(tmp_path)
    test_txt = root / "Ebay_test.txt"
    lines = test_txt.read_text().splitlines()
    test_txt.write_text("\n".join(lines[1:]))
    with pytest.raises(DatasetError, match=r"Ebay_test.txt, line 1: expected the header"):
        read_index("sop", root)
    test_txt.write_text("\n".join(lines + ["13 six 3 chair_final/x.JPG"]))
    with pytest.raises(DatasetError, match=r"Ebay_test.txt, line 8: expected '<image_id> <class_id>"):
        read_index("sop", root)
    test_txt.unlink()
    with pytest.raises(DatasetError, match=r"missing metadata file .*Ebay_test.txt.*Info_Files/Ebay_test.txt"):
        read_index("sop", root)


# ---------------------------------------------------------------- msmt17
@pytest.mark.parametrize("version", [1, 2])
def test_msmt17_lists_and_cameras(tmp_path, version):
    df = read_index("msmt17", fab.make_msmt17(tmp_path, version=version))
    assert counts(df) == {"train": 8, "query": 2, "gallery": 4}
    assert rows(df, "train")["label"].tolist() == [0, 0, 1, 1, 2, 2, 0, 1]
    assert rows(df, "train")["cam"].tolist() == [0] * 6 + [1, 1]  # camera field - 1
    assert rows(df, "gallery")["cam"].tolist() == [2, 4, 2, 4]
    assert rows(df, "query")["label"].tolist() == [0, 1]
    train_dir, test_dir = ("train/", "test/") if version == 1 else ("mask_train_v2/", "mask_test_v2/")
    assert rows(df, "train")["path"].str.startswith(train_dir).all()
    assert rows(df, "gallery")["path"].str.startswith(test_dir).all()


def test_msmt17_without_val_and_errors(tmp_path):
    root = fab.make_msmt17(tmp_path)
    assert counts(read_index("msmt17", root, include_val=False)) == {"train": 6, "query": 2, "gallery": 4}
    (root / "list_query.txt").write_text("0000/badname.jpg 0\n")
    with pytest.raises(DatasetError, match=r"list_query.txt, line 1: expected .*'0000/badname.jpg 0'"):
        read_index("msmt17", root)
    (root / "list_gallery.txt").unlink()
    (root / "list_query.txt").write_text("")
    with pytest.raises(DatasetError, match=r"list_query.txt: lists no images"):
        read_index("msmt17", root)


# ---------------------------------------------------------------- cars196
def test_cars196_s2sd_folder_order(tmp_path):
    df = read_index("cars196", fab.make_cars196(tmp_path))
    assert counts(df) == {"train": 4, "test": 4}  # first half of the classes train; '._' file skipped
    assert df["path"].iloc[0] == "images/AM General Hummer SUV 2000/000000.jpg"  # 'AM' < 'Acura'
    assert df["label"].tolist() == [0, 0, 1, 1, 2, 2, 3, 3]
    assert rows(df, "test")["label"].min() == 2


def test_cars196_published_mat(tmp_path):
    df = read_index("cars196", fab.make_cars196(tmp_path, layout="published"))
    assert df["path"].tolist() == [f"car_ims/{i:06d}.jpg" for i in range(1, 9)]
    assert df["label"].tolist() == [0, 0, 1, 1, 2, 2, 3, 3]
    assert df["split"].tolist() == ["train"] * 4 + ["test"] * 4  # DML split, not the mat's test flag
    assert df["bbox"].iloc[0] == (1.0, 2.0, 5.0, 6.0)
    (tmp_path / "cars_annos.mat").write_bytes(b"garbage")
    with pytest.raises(DatasetError, match=r"cars_annos.mat: not a cars_annos.mat"):
        read_index("cars196", tmp_path)


# ---------------------------------------------------------------- cifar100
@pytest.mark.parametrize("nested", [True, False])
def test_cifar100_pickle_rows(tmp_path, nested):
    df = read_index("cifar100", fab.make_cifar100(tmp_path, nested=nested))
    base = "cifar-100-python/" if nested else ""
    assert counts(df) == {"train": 6, "test": 4}
    assert rows(df, "train")["path"].unique().tolist() == [base + "train"]
    assert rows(df, "test")["index"].tolist() == [0, 1, 2, 3]
    assert rows(df, "train")["label"].tolist() == [0, 7, 14, 21, 28, 35]
    assert rows(df, "test")["super_label"].tolist() == [0, 1, 2, 3]


def test_cifar100_errors(tmp_path):
    root = fab.make_cifar100(tmp_path)
    with open(root / "cifar-100-python" / "test", "wb") as f:  # CIFAR-10 style pickle
        pickle.dump({"data": np.zeros((2, 3072), np.uint8), "labels": [0, 1]}, f)
    with pytest.raises(DatasetError, match=r"cifar-100-python/test: the pickle has no \['fine_labels'"):
        read_index("cifar100", root)
    (root / "cifar-100-python" / "test").write_bytes(b"not a pickle")
    with pytest.raises(DatasetError, match=r"cifar-100-python/test: not a readable CIFAR pickle"):
        read_index("cifar100", root)
    (root / "cifar-100-python" / "test").unlink()
    with pytest.raises(DatasetError, match=r"missing metadata file .*cifar-100-python/test"):
        read_index("cifar100", root)


# ---------------------------------------------------------------- imagenet
def test_imagenet_follows_image_folder_order(tmp_path):
    # the expected list is what torchvision 0.29's ImageFolder(root / "train").samples gives on this tree
    # (sorted walk, sub-folders after the folder's own files, case-insensitive extensions)
    df = read_index("imagenet", fab.make_imagenet(tmp_path))
    a, b, c = fab.IMAGENET_WNIDS
    assert list(zip(rows(df, "train")["path"], rows(df, "train")["label"])) == [
        (f"train/{a}/{a}_1.JPEG", 0), (f"train/{a}/{a}_2.JPEG", 0),
        (f"train/{b}/{b}_1.JPEG", 1), (f"train/{b}/{b}_2.JPEG", 1),
        (f"train/{c}/extra.PNG", 2), (f"train/{c}/{c}_1.JPEG", 2), (f"train/{c}/sub/{c}_2.JPEG", 2),
    ]  # README.txt left out
    assert rows(df, "test")["path"].tolist() == [f"val/{w}/ILSVRC2012_val_{i:08d}.JPEG"
                                                 for i, w in enumerate(fab.IMAGENET_WNIDS, start=1)]
    assert rows(df, "test")["label"].tolist() == [0, 1, 2]


def test_imagenet_errors(tmp_path):
    root = fab.make_imagenet(tmp_path)
    shutil.rmtree(root / "val" / fab.IMAGENET_WNIDS[1])
    with pytest.raises(DatasetError, match=r"val' has 2 class folders, train/ has 3 .*n01443537"):
        read_index("imagenet", root)
    shutil.rmtree(root / "val")
    (root / "val").mkdir()
    (root / "val" / "ILSVRC2012_val_00000001.JPEG").write_bytes(b"")
    with pytest.raises(DatasetError, match=r"val' has no class sub-folders; .*valprep"):
        read_index("imagenet", root)
    for f in (root / "train" / fab.IMAGENET_WNIDS[0]).iterdir():
        f.unlink()
    with pytest.raises(DatasetError, match=r"n01440764' holds no image"):
        read_index("imagenet", root)


# ---------------------------------------------------------------- roxford5k / rparis6k
@pytest.mark.parametrize("name", ["roxford5k", "rparis6k"])
def test_revisited_queries_gallery_and_gnd(tmp_path, name):
    df = read_index(name, fab.make_revisited(tmp_path, name))
    assert counts(df) == {"query": 2, "gallery": 6}
    assert df["split"].tolist()[:2] == ["query", "query"]
    gallery = rows(df, "gallery")
    assert gallery["path"].tolist() == [f"{name}/jpg/{name}_db_{i}.jpg" for i in range(6)]  # imlist order
    assert gallery["label"].eq(-1).all() and gallery["bbox"].isna().all()
    assert rows(df, "query")["label"].tolist() == [0, 1]
    assert rows(df, "query")["bbox"].tolist() == [(1.0, 2.0, 6.0, 7.0), (0.0, 0.0, 8.0, 8.0)]
    gnd = df.attrs["gnd"]
    assert [g["easy"] for g in gnd] == [[0, 1], []] and gnd[1]["hard"] == [4, 5] and gnd[0]["junk"] == [3]
    inner = read_index(name, tmp_path / name)  # root may also be the dataset folder itself
    assert inner["path"].iloc[0] == f"jpg/{name}_query_0.jpg" and len(inner.attrs["gnd"]) == 2


def test_revisited_errors(tmp_path):
    root = fab.make_roxford5k(tmp_path)
    pkl = root / "roxford5k" / "gnd_roxford5k.pkl"
    cfg = pickle.loads(pkl.read_bytes())
    cfg["gnd"][1]["hard"] = [4, 6]
    pkl.write_bytes(pickle.dumps(cfg))
    with pytest.raises(DatasetError, match=r"gnd_roxford5k.pkl: gnd\[1\]\['hard'\] indexes 6, outside the 6"):
        read_index("roxford5k", root)
    cfg["gnd"] = cfg["gnd"][:1]
    pkl.write_bytes(pickle.dumps(cfg))
    with pytest.raises(DatasetError, match=r"2 queries but 1 gnd entries"):
        read_index("roxford5k", root)
    pkl.unlink()
    with pytest.raises(DatasetError, match=r"missing metadata file .*roxford5k/gnd_roxford5k.pkl"):
        read_index("roxford5k", root)


# ---------------------------------------------------------------- gldv2
@pytest.mark.parametrize("meta", [False, True])
def test_gldv2_csv_at_root_or_meta(tmp_path, meta):
    df = read_index("gldv2", fab.make_gldv2(tmp_path, meta=meta))
    assert counts(df) == {"train": 6}
    assert df["label"].tolist() == [11, 11, 7, 42, 42, 42]  # raw landmark ids, CSV order
    assert df["path"].iloc[0] == "train/0/a/1/0a1b2c3d4e5f6071.jpg"
    assert df["image_id"].iloc[2] == "2c3d4e5f60718293"
    paired = read_index("gldv2", tmp_path, min_images=2)  # whiten_mtd's training groups
    assert paired["label"].tolist() == [11, 11, 42, 42, 42]


def test_gldv2_errors(tmp_path):
    root = fab.make_gldv2(tmp_path)
    csv_file = root / "train_clean.csv"
    csv_file.write_text("landmark_id,images\n11,0a1b2c3d4e5f6071\nx,1b2c3d4e5f607182\n")
    with pytest.raises(DatasetError, match=r"train_clean.csv, line 3: expected '<landmark_id>"):
        read_index("gldv2", root)
    csv_file.write_text("id,url\n1,http://x\n")
    with pytest.raises(DatasetError, match=r"train_clean.csv, line 1: expected the header 'landmark_id,images'"):
        read_index("gldv2", root)
    csv_file.unlink()
    with pytest.raises(DatasetError, match=r"missing metadata file .*train_clean.csv.*meta/train_clean.csv"):
        read_index("gldv2", root)
