"""The ``svd`` reader on the fabricated miniature (tests/data/fabricate.py ``make_svd``)."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from distillery.data import DatasetError, read_index
from distillery.evaluation.video import group_frames
from tests.data import fabricate as fab


@pytest.fixture(scope="module")
def svd_root(tmp_path_factory):
    return fab.make_svd(tmp_path_factory.mktemp("svd"))


@pytest.fixture
def root(tmp_path):
    return fab.make_svd(tmp_path / "svd")


def videos(df, split):
    part = df[df["split"] == split]
    ids, lengths = group_frames(part["video_id"])
    return ids, lengths.tolist()


def test_splits_videos_and_frames(svd_root):
    df = read_index("svd", svd_root)
    assert df["split"].value_counts().to_dict() == {"train": 12, "gallery": 18, "query": 6}
    # train: the official train_ids, each train query then its candidates, negatives included
    assert videos(df, "train") == (["tq0", "tc0", "tc1", "tq1", "tc2"], [3, 2, 2, 2, 3])
    assert videos(df, "query") == (["q0", "q1"], [4, 2])
    # gallery: test candidates in first-appearance order, then the unlabeled distractors in file order
    assert videos(df, "gallery") == (["c0", "c1", "c2", "c3", "u0", "u1", "u2"], [3, 2, 5, 2, 2, 3, 1])
    gallery = df[df["split"] == "gallery"]
    assert gallery.groupby("video_id", sort=False)["distractor"].first().tolist() == [False] * 4 + [True] * 3
    assert not df.loc[df["split"] != "gallery", "distractor"].any()
    first = df.iloc[0]
    assert (first["path"], first["label"], first["frame"], first["frame_count"]) == ("frames/tq0/0000.jpg", 0, 0, 3)
    assert df.loc[df["video_id"] == "c2", "path"].tolist() == [f"frames/c2/{i:04d}.jpg" for i in range(5)]
    assert df["label"].tolist() == df["video_id"].map({v: i for i, v in enumerate(fab.SVD_FRAMES)}).tolist()
    assert df["label"].dtype == np.int64 and df["frame"].dtype == np.int64
    assert all((svd_root / p).is_file() for p in df["path"])


def test_ground_truth_travels_in_attrs(svd_root):
    df = read_index("svd", svd_root)
    assert df.attrs["groundtruth"] == {"q0": {"c0": 1, "c1": 0, "c2": 1}, "q1": {"c1": 1, "c3": 0}}
    assert df.attrs["train_groundtruth"] == {"tq0": {"tc0": 1, "tc1": 0}, "tq1": {"tc2": 1}}
    assert list(df.attrs["groundtruth"]) == ["q0", "q1"]  # ".mp4" removed, file order kept


def test_frame_selection_and_options(svd_root):
    df = read_index("svd", svd_root, max_frames=3, stride=2, train_max_frames=2, distractors=False)
    # evaluation frames: range(0, min(count, 3), 2); train: the first min(count, 2)
    assert df.loc[df["video_id"] == "q0", "frame"].tolist() == [0, 2]
    assert df.loc[df["video_id"] == "c2", "frame"].tolist() == [0, 2]
    assert df.loc[df["video_id"] == "c1", "frame"].tolist() == [0]
    assert df.loc[df["video_id"] == "tq0", "frame"].tolist() == [0, 1]
    assert df["split"].value_counts().to_dict() == {"train": 10, "gallery": 6, "query": 3}
    assert df.loc[df["video_id"] == "c2", "frame_count"].tolist() == [5, 5]  # the file's count, not the kept one
    assert "u0" not in set(df["video_id"])  # distractors=False: the official --subset_eval
    whole = read_index("svd", svd_root, max_frames=None)
    assert whole["split"].value_counts()["gallery"] == 18
    for bad in ({"stride": 0}, {"max_frames": 0}, {"train_max_frames": -1}, {"max_frames": 2.5}):
        with pytest.raises(ValueError, match="must be a positive integer"):
            read_index("svd", svd_root, **bad)


def test_flat_layout_with_config_key_names(tmp_path, svd_root):
    flat = read_index("svd", fab.make_svd(tmp_path / "flat", flat=True))
    assert flat.equals(read_index("svd", svd_root))
    assert flat.attrs["groundtruth"] == read_index("svd", svd_root).attrs["groundtruth"]


def test_missing_required_files_are_named(root):
    (root / "metadata-release" / "test_groundtruth").unlink()
    with pytest.raises(DatasetError, match=r"missing metadata file .*metadata-release/test_groundtruth"):
        read_index("svd", root)


def test_missing_frames(root):
    (root / "frames" / "c2" / "0004.jpg").unlink()
    with pytest.raises(DatasetError, match=r"missing frame file .*frames/c2/0004.jpg.*num_frames"):
        read_index("svd", root)
    assert len(read_index("svd", root, max_frames=4)) == 35  # frame 4 is not needed then
    assert len(read_index("svd", root, check_frames=False)) == 36
    shutil.rmtree(root / "frames")
    with pytest.raises(DatasetError, match=r"missing image folder .*frames"):
        read_index("svd", root)


@pytest.mark.parametrize("text, message", [
    ("q0.mp4 c0.mp4\n", r"test_groundtruth, line 1: expected '<query id> <candidate id> <0\|1>'"),
    ("q0 c0 yes\n", r"test_groundtruth, line 1: expected"),
    ("q0 c0 1\nq0 c0 0\n", r"test_groundtruth, line 2: pair \(q0, c0\) listed again with label 0"),
    ("\n", r"test_groundtruth: lists no images"),
])
def test_malformed_ground_truth(root, text, message):
    (root / "metadata-release" / "test_groundtruth").write_text(text)
    with pytest.raises(DatasetError, match=message):
        read_index("svd", root)


def test_frame_count_file_errors(root):
    counts = root / "num_frames"
    lines = counts.read_text().splitlines()
    counts.write_text("\n".join(line for line in lines if not line.startswith("u1 ")) + "\n")
    with pytest.raises(DatasetError, match=r"num_frames: no frame count for video 'u1' \(1 videos missing\)"):
        read_index("svd", root)
    assert "u1" not in set(read_index("svd", root, distractors=False)["video_id"])
    counts.write_text("\n".join(lines + ["zz 0"]) + "\n")
    with pytest.raises(DatasetError, match=r"num_frames, line 15: expected '<video id> <frame count>' with one "):
        read_index("svd", root)


def test_inconsistent_metadata_files_are_named(root):
    meta = root / "metadata-release"
    (meta / "unlabeled-data-id").write_text("u0.mp4\nc3.mp4\n")
    with pytest.raises(DatasetError, match=r"unlabeled-data-id: lists 'c3', a query or candidate of .*test_gr"):
        read_index("svd", root)
    (meta / "unlabeled-data-id").write_text("u0.mp4\n")
    assert read_index("svd", root)["video_id"].iloc[-1] == "u0"
    (meta / "query-id").write_text("tq0.mp4\ntq1.mp4\nq0.mp4\n")
    with pytest.raises(DatasetError, match=r"query-id: does not list query video 'q1'"):
        read_index("svd", root)
    (meta / "query-id").unlink()  # optional files are checked only when present
    (meta / "labeled-data-id").write_text("tc0\n")
    with pytest.raises(DatasetError, match=r"labeled-data-id: does not list ground-truth candidate 'tc1'"):
        read_index("svd", root)
    (meta / "labeled-data-id").unlink()
    (meta / "all-video-id").write_text("q0\n")
    with pytest.raises(DatasetError, match=r"all-video-id: does not list video 'tq0'"):
        read_index("svd", root)
    (meta / "all-video-id").unlink()
    (meta / "groundtruth").write_text("tq0 tc0 1\n")
    with pytest.raises(DatasetError, match=r"groundtruth: has no pair \(tq0, tc1\) with label 0"):
        read_index("svd", root)
    (meta / "groundtruth").unlink()
    assert len(read_index("svd", root)) == 32  # u1 and u2 (4 frames) no longer distractors
