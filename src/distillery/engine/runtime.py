"""Process-wide setup: seeding, determinism, threads and device choice."""

from __future__ import annotations

import fcntl
import os
import random
import tempfile
from pathlib import Path

import numpy as np
import torch


def setup_runtime(seed: int, deterministic: bool = True, threads: int | None = None, device: str = "auto") -> torch.device:
    """Seed every RNG, optionally force deterministic kernels (else cuDNN autotuning), set CPU threads; return
    the torch device (with several GPUs visible and no torchrun, the GPU this process claimed: ``claim_gpu``)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if threads:
        torch.set_num_threads(int(threads))
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False
    else:
        torch.backends.cudnn.benchmark = True  # fixed input sizes: let cuDNN pick the fastest kernels
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("training.device is 'cuda' but no CUDA device is visible; set training.device: cpu")
    if device == "cuda" and int(os.environ.get("WORLD_SIZE", 1)) <= 1 and torch.cuda.device_count() > 1:
        index = claim_gpu(torch.cuda.device_count())
        torch.cuda.set_device(index)
        return torch.device("cuda", index)
    return torch.device(device)


_CLAIMED: dict[int, object] = {}  # GPU index -> its open lock file: a claim lasts as long as the process


def claim_gpu(count: int, lock_dir=None) -> int:
    """The first of ``count`` GPUs that no other Distillery process on this machine holds (an exclusive
    ``flock`` on ``<lock_dir>/gpu<i>.lock``, released when the process exits, even by a crash). DVC starts all
    queue workers (``dvc queue start -j N``) in one environment, so this is what gives each running experiment
    its own GPU. A process keeps the GPU it claimed first. ``lock_dir``: ``$DISTILLERY_GPU_LOCKS`` or
    ``<tmp>/distillery-gpu-locks``. Raises RuntimeError when all are held (more workers than GPUs)."""
    if _CLAIMED:
        return next(iter(_CLAIMED))
    lock_dir = Path(lock_dir or os.environ.get("DISTILLERY_GPU_LOCKS")
                    or Path(tempfile.gettempdir()) / "distillery-gpu-locks")
    lock_dir.mkdir(parents=True, exist_ok=True)
    for index in range(count):
        handle = open(lock_dir / f"gpu{index}.lock", "w")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.close()
            continue
        _CLAIMED[index] = handle
        return index
    raise RuntimeError(f"all {count} visible GPUs are held by other Distillery processes (locks in {lock_dir}); run "
                       f"at most {count} queue workers, or narrow the pool with CUDA_VISIBLE_DEVICES")
