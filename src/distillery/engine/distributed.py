"""Minimal torch.distributed helpers for losses whose batch is the global batch (whiten_mtd's similarity
matrices). Without an initialised process group every helper is the single-process identity."""

from __future__ import annotations

import torch
import torch.distributed as dist


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


def world_size() -> int:
    """Number of ranks of the default process group; 1 without one."""
    return dist.get_world_size() if is_distributed() else 1


def all_gather_with_grad(x: torch.Tensor) -> torch.Tensor:
    """Concatenate ``x`` (B x ...) of every rank along dim 0 -> (W·B) x ..., rank order.

    The other ranks' slices are constants; this rank's own slice is ``x`` itself, so gradients flow into the
    local part only (whiten_mtd's ``gather_with_grad``). Every rank must pass the same shape. With one
    process (or no process group) returns ``x`` unchanged. Under DDP, gradients are averaged over ranks, so a
    loss computed on the gathered batch must be multiplied by :func:`world_size` to get the gradient of the
    full-batch loss.
    """
    n = world_size()
    if n == 1:
        return x
    parts = [torch.empty_like(x) for _ in range(n)]
    dist.all_gather(parts, x.contiguous())
    parts[dist.get_rank()] = x
    return torch.cat(parts, dim=0)
