"""Host -> device copies that overlap with GPU work."""

from __future__ import annotations

import torch


def to_device(x: torch.Tensor, device, *, channels_last: bool = False) -> torch.Tensor:
    """``x`` on ``device``; to a GPU from pinned memory without blocking the host (the caching host allocator
    keeps the pinned buffer alive until the copy is done). ``channels_last`` lays a 4-d tensor out NHWC."""
    device = torch.device(device)
    if x.device != device:
        if device.type == "cuda" and x.device.type == "cpu":
            x = x.pin_memory().to(device, non_blocking=True)
        else:
            x = x.to(device)
    if channels_last and x.dim() == 4:
        x = x.contiguous(memory_format=torch.channels_last)
    return x
