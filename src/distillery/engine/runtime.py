"""Process-wide setup: seeding, determinism, threads and device choice."""

from __future__ import annotations

import os
import random

import numpy as np
import torch


def setup_runtime(seed: int, deterministic: bool = True, threads: int | None = None, device: str = "auto") -> torch.device:
    """Seed every RNG, optionally force deterministic kernels, set CPU threads; return the torch device."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if threads:
        torch.set_num_threads(int(threads))
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("training.device is 'cuda' but no CUDA device is visible; set training.device: cpu")
    return torch.device(device)
