"""Atomic checkpoints: written to a temporary file and renamed, so the previous one survives any failure."""

from __future__ import annotations

import hashlib
from pathlib import Path

import torch

from distillery.utils.io import atomic_path


def save_checkpoint(path, state: dict) -> None:
    """torch.save ``state`` to ``path`` atomically (a crash or a full disk leaves the old file intact)."""
    with atomic_path(path, ".pt") as tmp:
        torch.save(state, tmp)


def load_checkpoint(path, map_location="cpu") -> dict:
    return torch.load(Path(path), map_location=map_location, weights_only=False)


def file_sha256(path, length: int = 12) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()[:length]


def load_model_weights(model: torch.nn.Module, path, what: str = "teacher") -> dict:
    """Load ``state["model"]`` (or a bare state dict) into ``model`` strictly; a clear error on mismatch."""
    state = load_checkpoint(path)
    weights = state.get("model", state) if isinstance(state, dict) else state
    try:
        model.load_state_dict(weights, strict=True)
    except RuntimeError as err:
        first = str(err).splitlines()[0] if str(err) else "shape or key mismatch"
        detail = str(err).split("\n\t")[1] if "\n\t" in str(err) else first
        raise ValueError(f"{what} checkpoint {path} does not fit the configured architecture ({detail.strip()[:160]}); "
                         f"set the {what}'s model/embedding_dim to the ones it was trained with, or retrain it") from None
    return state
