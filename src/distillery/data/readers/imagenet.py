"""ImageNet (ILSVRC-2012) in torchvision's ImageFolder layout: ``train/<wnid>/*`` and ``val/<wnid>/*``."""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd

from distillery.data.registry import DatasetError, register_reader
from distillery.data.readers._common import find_dir, frame, require_root

EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")
SPLITS = (("train", "train"), ("val", "test"))


def image_folder(root: Path, folder: str) -> tuple[list[str], list[str], list[int]]:
    """(class names, root-relative paths, labels) exactly as torchvision's ImageFolder scans ``root/folder``.

    Classes = sorted sub-folder names (label = index); files found recursively (symlinks followed), walk
    and names sorted, kept when the lower-cased name ends with one of ``EXTENSIONS``.
    """
    base = root / folder
    classes = sorted(e.name for e in os.scandir(base) if e.is_dir())
    if not classes:
        raise DatasetError(f"imagenet: {str(base)!r} has no class sub-folders; sort its images into one "
                           f"<wnid>/ folder per class (e.g. with valprep.sh for val/)")
    paths, labels = [], []
    for label, name in enumerate(classes):
        n_before = len(paths)
        for dirpath, _, fnames in sorted(os.walk(base / name, followlinks=True)):
            rel = Path(dirpath).relative_to(root).as_posix()
            paths += [f"{rel}/{f}" for f in sorted(fnames) if f.lower().endswith(EXTENSIONS)]
        labels += [label] * (len(paths) - n_before)
        if len(paths) == n_before:
            raise DatasetError(f"imagenet: class folder {str(base / name)!r} holds no image "
                               f"({', '.join(EXTENSIONS)}); remove it or restore its images")
    return classes, paths, labels


@register_reader("imagenet")
def read_imagenet(root: Path) -> pd.DataFrame:
    """Index ImageNet as mdistiller does: ``train/`` -> ``train`` (1,281,167 images), ``val/`` -> ``test``
    (50,000), 1,000 classes; label = index of the wnid folder in the sorted folder list.

    As with two ImageFolders, labels are computed per split, so ``val/`` must hold the same class folders
    as ``train/``; a mismatch raises DatasetError instead of silently shifting labels. Works unchanged for
    other ImageFolder sets (e.g. Tiny-ImageNet with val re-arranged into class folders).
    """
    root = require_root(root, "imagenet")
    columns = {"path": [], "label": [], "split": []}
    reference = None
    for folder, split in SPLITS:
        find_dir(root, [folder], "imagenet", "expected train/<wnid>/*.JPEG and val/<wnid>/*.JPEG")
        classes, paths, labels = image_folder(root, folder)
        if reference is not None and classes != reference:
            extra = sorted(set(classes) ^ set(reference))[:3]
            raise DatasetError(f"imagenet: {str(root / folder)!r} has {len(classes)} class folders, train/ has "
                               f"{len(reference)} (differing e.g. {extra}); give val/ the same <wnid>/ folders")
        reference = classes
        columns["path"] += paths
        columns["label"] += labels
        columns["split"] += [split] * len(paths)
    return frame(columns)
