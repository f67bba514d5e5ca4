"""Data-parallel training on PyTorch's own engine (``torchrun``, one process per GPU or CPU worker).

Under ``torchrun --nproc_per_node=N`` (env ``WORLD_SIZE`` > 1) :func:`init_from_env` joins the process group
(``nccl`` on CUDA, ``gloo`` on CPU); without it every function here is a single-process no-op, so the same code
runs alone or distributed. Each rank trains on its shard of every epoch's batch list (:func:`shard`); the
student is wrapped in ``DistributedDataParallel`` (gradients averaged), the distiller's own parameters are
averaged with :func:`average_gradients`; relation losses see the global KD batch through
:func:`all_gather_with_grad`. Only rank 0 writes files (:func:`is_main`).
"""

from __future__ import annotations

import os
from dataclasses import replace

import torch
import torch.distributed as dist
import torch.nn as nn

from distillery.models.output import ModelOutput


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


def world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", 0))


def is_main() -> bool:
    """True on rank 0 (and in a single process): the rank that writes checkpoints, logs and metrics."""
    return rank() == 0


def launched_ranks() -> int:
    """``WORLD_SIZE`` of the launcher's environment (1 without torchrun)."""
    return int(os.environ.get("WORLD_SIZE", 1))


def init_from_env(device=torch.device("cpu")) -> torch.device:
    """Join the process group described by torchrun's env vars if ``WORLD_SIZE`` > 1 (once; later calls only
    return the device). Backend ``nccl`` for a CUDA ``device`` (then this rank's GPU is ``LOCAL_RANK``),
    ``gloo`` otherwise. Returns the device this rank trains on."""
    device = torch.device(device)
    if launched_ranks() <= 1:
        return device
    if device.type == "cuda":
        device = torch.device("cuda", local_rank())
        torch.cuda.set_device(device)
    if not is_distributed():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return device


def shutdown() -> None:
    if is_distributed():
        dist.destroy_process_group()


def barrier() -> None:
    if is_distributed():
        dist.barrier()


def shard(batches: list) -> list:
    """This rank's share of an epoch's batch list: batches rank, rank + W, ... of the first
    ``W * (len // W)`` (every rank gets the same number of steps; the remainder is dropped). Global step i
    thus trains on batches ``W i .. W i + W - 1`` of the single-process list."""
    size = world_size()
    if size == 1:
        return batches
    return batches[rank():len(batches) // size * size:size]


class _AllGatherWithGrad(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        ctx.rank, ctx.size = rank(), world_size()
        parts = [torch.empty_like(x) for _ in range(ctx.size)]
        dist.all_gather(parts, x.contiguous())
        return torch.cat(parts)

    @staticmethod
    def backward(ctx, grad):
        grad = grad.contiguous()
        dist.all_reduce(grad)
        return grad.chunk(ctx.size)[ctx.rank]


def all_gather_with_grad(x: torch.Tensor) -> torch.Tensor:
    """Concatenate ``x`` (B x ...) of every rank along dim 0 in rank order -> (W B) x ...; the gradient flows
    back to this rank's slice.

    Backward sums the incoming gradients over ranks (all-reduce) and keeps this rank's slice: when every rank
    computes the same loss L of the gathered batch, rank r's slice receives W dL/dx_r, and DDP's averaging
    over W ranks then gives exactly the single-process gradient of L. Every rank must pass the same shape.
    Returns ``x`` itself in a single process."""
    if world_size() == 1:
        return x
    return _AllGatherWithGrad.apply(x)


def all_gather(x: torch.Tensor) -> torch.Tensor:
    """Concatenation of ``x`` of every rank along dim 0, without gradient (teacher outputs, labels)."""
    if world_size() == 1:
        return x
    parts = [torch.empty_like(x) for _ in range(world_size())]
    dist.all_gather(parts, x.contiguous())
    return torch.cat(parts)


def _gather_value(value, fn):
    if isinstance(value, torch.Tensor):
        return fn(value)
    if isinstance(value, list):
        return [_gather_value(v, fn) for v in value]
    if isinstance(value, dict):
        return {k: _gather_value(v, fn) for k, v in sorted(value.items())}
    return value


def gather_outputs(out: ModelOutput, names, with_grad: bool) -> ModelOutput:
    """``out`` with the fields ``names`` replaced by their global-batch concatenation (other fields local)."""
    if world_size() == 1:
        return out
    fn = all_gather_with_grad if with_grad else all_gather
    return replace(out, **{n: _gather_value(getattr(out, n), fn) for n in names})


def wrap_model(model: nn.Module, device: torch.device) -> nn.Module:
    """``DistributedDataParallel(model)`` when distributed (weights broadcast from rank 0), else ``model``."""
    if world_size() == 1:
        return model
    device_ids = [device.index] if torch.device(device).type == "cuda" else None
    return nn.parallel.DistributedDataParallel(model, device_ids=device_ids)


def broadcast_module(module: nn.Module) -> None:
    """Copy rank 0's parameters and buffers into ``module`` on every rank (modules DDP does not wrap)."""
    if world_size() == 1:
        return
    with torch.no_grad():
        for tensor in [*module.parameters(), *module.buffers()]:
            dist.broadcast(tensor.data, src=0)


def average_gradients(params) -> None:
    """Average the ``.grad`` of ``params`` over ranks (parameters outside DDP, e.g. a method's connectors)."""
    size = world_size()
    if size == 1:
        return
    for p in params:
        if p.grad is not None:
            dist.all_reduce(p.grad)
            p.grad.div_(size)


def mean_over_ranks(values: dict[str, float]) -> dict[str, float]:
    """Average a dict of numbers over ranks (same keys on every rank)."""
    if world_size() == 1 or not values:
        return values
    keys = sorted(values)
    device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")
    total = torch.tensor([float(values[k]) for k in keys], dtype=torch.float64, device=device)
    dist.all_reduce(total)
    return {k: float(v) / world_size() for k, v in zip(keys, total.tolist())}
