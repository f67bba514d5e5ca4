"""Shared parsing helpers for the dataset readers: locating files, splitting lines, one-line errors.

Every failure is a ``DatasetError`` whose single-line message names the file (or folder) at fault and says
what to do about it, so a wrong ``data.root`` is diagnosed without reading a traceback.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import pandas as pd

from distillery.data.registry import DatasetError

REDOWNLOAD = "repair or re-download the file from the dataset's official release"


def require_root(root: Path, dataset: str) -> Path:
    """``root`` as a Path; DatasetError when the folder does not exist."""
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"{dataset}: dataset root {str(root)!r} does not exist or is not a folder; "
                           f"point data.root at the folder that holds {dataset} in its published layout")
    return root


def _join(root: Path, candidates: Sequence[str]) -> str:
    return " or ".join(repr(str(root / c)) for c in candidates)


def find_file(root: Path, candidates: Sequence[str], dataset: str, hint: str) -> Path:
    """First existing file among ``root / c``; DatasetError naming every place looked at otherwise."""
    for c in candidates:
        if (root / c).is_file():
            return root / c
    raise DatasetError(f"{dataset}: missing metadata file {_join(root, candidates)}; {hint}")


def find_dir(root: Path, candidates: Sequence[str], dataset: str, hint: str) -> str:
    """First candidate (relative to root) that is a folder; DatasetError otherwise."""
    for c in candidates:
        if (root / c).is_dir():
            return c
    raise DatasetError(f"{dataset}: missing image folder {_join(root, candidates)}; {hint}")


def malformed(path: Path, lineno: int, line: str, expected: str) -> DatasetError:
    """The error for one bad line: file, 1-based line number, the expected format and the offending text."""
    text = line.strip()
    text = text if len(text) <= 80 else text[:77] + "..."
    return DatasetError(f"{path}, line {lineno}: expected {expected}, got {text!r}; {REDOWNLOAD}")


def read_lines(path: Path) -> list[str]:
    """The file's lines (UTF-8); DatasetError when it cannot be decoded."""
    try:
        return path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as err:
        raise DatasetError(f"{path}: not a UTF-8 text file ({err.reason} at byte {err.start}); {REDOWNLOAD}") from None


def split_rows(path: Path, n_fields: int, expected: str, skip: int = 0) -> Iterator[tuple[int, str, list[str]]]:
    """Yield ``(lineno, line, fields)`` for each non-blank line after ``skip`` lines, split on whitespace.

    A line with a number of fields other than ``n_fields`` raises DatasetError (``expected`` describes the
    format in the message).
    """
    for lineno, line in enumerate(read_lines(path)[skip:], start=skip + 1):
        fields = line.split()
        if not fields:
            continue
        if len(fields) != n_fields:
            raise malformed(path, lineno, line, expected)
        yield lineno, line, fields


def to_int(text: str, path: Path, lineno: int, line: str, expected: str) -> int:
    """``int(text)``; DatasetError naming the line when it is not an integer."""
    try:
        return int(text)
    except ValueError:
        raise malformed(path, lineno, line, expected) from None


def require_rows(n: int, path: Path) -> None:
    """DatasetError when a metadata file lists no images."""
    if n == 0:
        raise DatasetError(f"{path}: lists no images; {REDOWNLOAD}")


def dense_rank(values) -> np.ndarray:
    """Map each value to its rank among the sorted distinct values (0..C-1), as int64."""
    _, inverse = np.unique(np.asarray(values), return_inverse=True)
    return inverse.astype(np.int64).reshape(-1)


def frame(columns: dict) -> pd.DataFrame:
    """DataFrame with ``label`` (and ``super_label``/``cam``/``index`` when present) as int64."""
    df = pd.DataFrame(columns)
    for col in ("label", "super_label", "cam", "index"):
        if col in df.columns:
            df[col] = df[col].astype(np.int64)
    return df
