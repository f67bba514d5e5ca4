"""SVD short-video near-duplicate retrieval in whiten_mtd's layout (``config/svd.yaml``).

The root holds the metadata files of the SVD release (in ``metadata-release/`` or at the root), the frame
count file and the extracted frames::

    metadata-release/{all-video-id, labeled-data-id, unlabeled-data-id, query-id,
                      groundtruth, train_groundtruth, test_groundtruth}
    num_frames                      # "<video id> <frame count>" lines
    frames/<video id>/<NNNN>.jpg    # frames 0000.jpg ... (count - 1), "%04d"

The yaml key names (``all_video_id``, ``labeled_id``, ``unlabeled_id``, ``query_id``, ``frame_count_file``)
are accepted as file names too. Id and ground-truth files name videos with or without ``.mp4`` (removed, as
whiten_mtd does); ground-truth lines are ``<query id> <candidate id> <0|1>``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from distillery.data.registry import DatasetError, register_reader
from distillery.data.readers._common import (
    REDOWNLOAD, find_dir, find_file, malformed, require_root, require_rows, split_rows, to_int,
)

META_DIRS = ("metadata-release/", "")
FILES = {  # whiten_mtd config key -> accepted file names
    "all_video_id": ("all-video-id", "all_video_id"),
    "labeled_id": ("labeled-data-id", "labeled_id"),
    "unlabeled_id": ("unlabeled-data-id", "unlabeled_id"),
    "query_id": ("query-id", "query_id"),
    "groundtruth": ("groundtruth",),
    "train_groundtruth": ("train_groundtruth", "train-groundtruth"),
    "test_groundtruth": ("test_groundtruth", "test-groundtruth"),
    "frame_count_file": ("num_frames", "frame_count_file", "frame_count"),
}
REQUIRED = ("train_groundtruth", "test_groundtruth", "unlabeled_id", "frame_count_file")
HINT = "download the SVD metadata release into metadata-release/ (and write num_frames for the extracted frames)"
GT_FORMAT = "'<query id> <candidate id> <0|1>'"
COUNT_FORMAT = "'<video id> <frame count>'"


def _candidates(key: str) -> list[str]:
    names = FILES[key]
    if key == "frame_count_file":  # whiten_mtd keeps it next to frames/, not in the metadata release
        return [d + n for d in reversed(META_DIRS) for n in names]
    return [d + n for d in META_DIRS for n in names]


def _locate(root: Path, key: str) -> Path | None:
    """The file of ``key``; DatasetError when a required one is missing, None for a missing optional one."""
    if key in REQUIRED:
        return find_file(root, _candidates(key), "svd", HINT)
    return next((root / c for c in _candidates(key) if (root / c).is_file()), None)


def _video(text: str) -> str:
    return text.replace(".mp4", "")


def _read_ids(path: Path) -> list[str]:
    """One video id per non-blank line, ``.mp4`` removed, file order."""
    return [_video(fields[0]) for _, _, fields in split_rows(path, 1, "'<video id>'")]


def _read_groundtruth(path: Path) -> dict[str, dict[str, int]]:
    """``{query: {candidate: label}}`` in file order; a pair listed twice with two labels is an error."""
    gt: dict[str, dict[str, int]] = {}
    for lineno, line, (q, c, label) in split_rows(path, 3, GT_FORMAT):
        value = to_int(label, path, lineno, line, GT_FORMAT)
        q, c = _video(q), _video(c)
        if gt.get(q, {}).get(c, value) != value:
            raise DatasetError(f"{path}, line {lineno}: pair ({q}, {c}) listed again with label {value} "
                               f"(was {gt[q][c]}); {REDOWNLOAD}")
        gt.setdefault(q, {})[c] = value
    require_rows(len(gt), path)
    return gt


def _read_frame_counts(path: Path) -> dict[str, int]:
    counts: dict[str, int] = {}
    for lineno, line, (vid, n) in split_rows(path, 2, COUNT_FORMAT):
        value = to_int(n, path, lineno, line, COUNT_FORMAT)
        if value < 1 or counts.get(vid, value) != value:
            raise malformed(path, lineno, line, COUNT_FORMAT + " with one positive count per video")
        counts[vid] = value
    return counts


def _train_ids(gt: dict[str, dict[str, int]]) -> list[str]:
    """whiten_mtd's ``MetaData.train_ids``: each query then its candidates (any label), first appearance."""
    return list(dict.fromkeys(v for q, cands in gt.items() for v in (q, *cands)))


def _first_missing(ids, allowed: set) -> str | None:
    return next((v for v in ids if v not in allowed), None)


def _check_optional(root: Path, train_gt: dict, test_gt: dict, used: list[str]) -> None:
    """Cross-check the metadata files the official code does not read, when they are present."""
    pairs = [(q, c, lab) for gt in (train_gt, test_gt) for q, cands in gt.items() for c, lab in cands.items()]
    checks = {
        "query_id": ([q for q, _, _ in pairs], "query video"),
        "labeled_id": ([c for _, c, _ in pairs], "ground-truth candidate"),
        "all_video_id": (used, "video"),
    }
    for key, (ids, what) in checks.items():
        path = _locate(root, key)
        if path is not None:
            missing = _first_missing(ids, set(_read_ids(path)))
            if missing is not None:
                raise DatasetError(f"{path}: does not list {what} {missing!r} of the ground truth / id files; "
                                   f"the metadata files are from different releases; {REDOWNLOAD}")
    path = _locate(root, "groundtruth")
    if path is not None:
        full = _read_groundtruth(path)
        bad = next(((q, c, lab) for q, c, lab in pairs if full.get(q, {}).get(c) != lab), None)
        if bad is not None:
            raise DatasetError(f"{path}: has no pair ({bad[0]}, {bad[1]}) with label {bad[2]} as listed in "
                               f"train_groundtruth / test_groundtruth; {REDOWNLOAD}")


def _segment(videos: list[str], split: str, counts: dict[str, int], limit: int | None, stride: int,
             distractor: bool) -> pd.DataFrame:
    """One row per selected frame: ``range(0, min(count, limit), stride)`` of each video, in video order."""
    total = np.array([counts[v] for v in videos], dtype=np.int64)
    span = total if limit is None else np.minimum(total, limit)
    n = (span + stride - 1) // stride
    first = np.repeat(np.cumsum(n) - n, n)
    frames = (np.arange(int(n.sum()), dtype=np.int64) - first) * stride
    ids = np.repeat(np.array(videos, dtype=object), n)
    return pd.DataFrame({"video_id": ids, "frame": frames, "frame_count": np.repeat(total, n),
                         "split": split, "distractor": distractor})


def _check_frames(root: Path, frames_dir: str, df: pd.DataFrame, count_file: Path) -> None:
    """The last frame each video needs exists (one look-up per video, not per frame)."""
    last = df.groupby("video_id", sort=False)["frame"].max()
    for vid, frame_no in last.items():
        path = root / frames_dir / vid / f"{frame_no:04d}.jpg"
        if not path.is_file():
            raise DatasetError(f"svd: missing frame file {str(path)!r} (video {vid!r} has {frame_no + 1} or more "
                               f"frames in {count_file}); re-extract the frames or rewrite the frame count file")


@register_reader("svd")
def read_svd(root: Path, max_frames: int | None = 60, stride: int = 1, train_max_frames: int | None = None,
             distractors: bool = True, check_frames: bool = True) -> pd.DataFrame:
    """Index SVD as whiten_mtd's training and evaluation use it: one row per frame.

    Splits (videos in this order, each video's frames consecutive and ascending):
    - ``train``: the official ``train_ids``, i.e. every query and candidate (label 0 or 1) of
      train_groundtruth in first-appearance order; frames ``0 .. min(count, train_max_frames) - 1`` (default
      every frame: the official sampler draws one uniformly random frame of the whole video).
    - ``query``: the queries of test_groundtruth (first appearance);
    - ``gallery``: the candidates of test_groundtruth (first appearance, ``distractor`` False), then, with
      ``distractors`` (the official full evaluation; False = ``--subset_eval``), every unlabeled-data-id
      video in file order (``distractor`` True: scored as a negative for every query).
    Query and gallery frames are the official evaluator's ``range(0, min(count, max_frames), stride)``
    (``max_frames`` bounds the frame number, so stride 2 keeps at most 30 of 60; None = no bound).

    Columns: ``path`` = ``frames/<video_id>/<frame:04d>.jpg``; ``label`` = the video's number in order of
    first appearance in this index (the same in every split; a video number, not a class: relevance is in
    the ground truth); ``split``; ``video_id``; ``frame``; ``frame_count`` (the video's count in the frame
    count file); ``distractor``. ``df.attrs["groundtruth"]`` = test_groundtruth as ``{query id: {candidate
    id: label}}`` (file order), ``df.attrs["train_groundtruth"]`` likewise.

    Raises DatasetError naming the file when a required file (train_groundtruth, test_groundtruth,
    unlabeled-data-id, num_frames, frames/) is missing or malformed, a video has no frame count, a needed
    frame file is missing (``check_frames``: the last needed frame of each video is looked up), an
    unlabeled video is also a test query or candidate, or an optional file present (query-id,
    labeled-data-id, all-video-id, groundtruth) disagrees with the ground truth. A pair listed twice with
    different labels is an error (whiten_mtd would keep the last).
    """
    for name, value in (("max_frames", max_frames), ("train_max_frames", train_max_frames), ("stride", stride)):
        if value is not None and (not isinstance(value, (int, np.integer)) or value < 1):
            raise ValueError(f"svd: {name} must be a positive integer{' or None' if name != 'stride' else ''}, "
                             f"got {value!r}")
    root = require_root(root, "svd")
    paths = {key: _locate(root, key) for key in REQUIRED}
    frames_dir = find_dir(root, ["frames"], "svd", "extract the frames of every video into frames/<id>/%04d.jpg")
    train_gt, test_gt = _read_groundtruth(paths["train_groundtruth"]), _read_groundtruth(paths["test_groundtruth"])
    unlabeled = _read_ids(paths["unlabeled_id"])
    queries = list(test_gt)
    candidates = list(dict.fromkeys(c for cands in test_gt.values() for c in cands))
    labeled = set(queries) | set(candidates)
    clash = next((v for v in unlabeled if v in labeled), None)
    if clash is not None:
        raise DatasetError(f"{paths['unlabeled_id']}: lists {clash!r}, a query or candidate of "
                           f"{paths['test_groundtruth']}; an unlabeled video cannot be a distractor and labeled")
    counts = _read_frame_counts(paths["frame_count_file"])
    train = _train_ids(train_gt)
    used = list(dict.fromkeys(train + queries + candidates + (unlabeled if distractors else [])))
    missing = _first_missing(used, set(counts))
    if missing is not None:
        n = sum(v not in counts for v in used)
        raise DatasetError(f"{paths['frame_count_file']}: no frame count for video {missing!r} ({n} videos "
                           f"missing); write one '<video id> <frame count>' line per extracted video")
    _check_optional(root, train_gt, test_gt, used)
    parts = [_segment(train, "train", counts, train_max_frames, 1, False),
             _segment(queries, "query", counts, max_frames, stride, False),
             _segment(candidates, "gallery", counts, max_frames, stride, False)]
    if distractors:
        parts.append(_segment(unlabeled, "gallery", counts, max_frames, stride, True))
    df = pd.concat(parts, ignore_index=True)
    if check_frames:
        _check_frames(root, frames_dir, df, paths["frame_count_file"])
    df.insert(0, "path", [f"{frames_dir}/{v}/{f:04d}.jpg" for v, f in zip(df["video_id"], df["frame"])])
    df.insert(1, "label", pd.factorize(df["video_id"])[0].astype(np.int64))
    df = df[["path", "label", "split", "video_id", "frame", "frame_count", "distractor"]]
    df.attrs["groundtruth"] = test_gt
    df.attrs["train_groundtruth"] = train_gt
    return df
