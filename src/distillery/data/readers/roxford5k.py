"""Revisited Oxford 5k (``gnd_roxford5k.pkl`` + ``jpg/``); see ``_revisited.read_revisited``."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from distillery.data.registry import register_reader
from distillery.data.readers._revisited import read_revisited


@register_reader("roxford5k")
def read_roxford5k(root: Path) -> pd.DataFrame:
    """70 queries (split ``query``, with ``bbox``) and 4,993 database images (``gallery``); gnd in
    ``df.attrs["gnd"]``. Layout and columns as in ``read_revisited``."""
    return read_revisited(root, "roxford5k")
