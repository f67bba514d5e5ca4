"""Speed switches of the training loop (params ``training.amp``, ``channels_last``, ``compile``).

- Mixed precision on CUDA: forwards run under ``torch.autocast`` (bf16 or fp16); losses are computed outside
  it on float32 copies of the outputs. Only fp16 needs a ``GradScaler``; the update order is backward of the
  scaled loss -> unscale -> clip -> one ``scaler.step`` -> ``scaler.update`` (clipping a scaled gradient
  would clip at the wrong norm). On a CPU device ``amp`` falls back to float32 with a warning.
- The frozen teacher runs under ``torch.inference_mode``; the fields a method reads are copied out as
  ordinary float32 tensors (inference tensors cannot be saved for the student's backward).
- ``channels_last`` lays networks and inputs out NHWC (faster convolutions on tensor cores).
- ``compile``: ``torch.compile`` of the forward; state dicts stay those of the plain module.
"""

from __future__ import annotations

import contextlib
import warnings
from dataclasses import fields, replace

import torch
import torch.nn as nn

from distillery.models.output import ModelOutput

AMP_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def resolve_amp(amp: str, device: torch.device) -> str:
    """The precision actually used: ``amp`` on CUDA, ``"none"`` elsewhere (with a warning)."""
    if amp not in ("none", *AMP_DTYPES):
        raise ValueError(f"training.amp must be none, bf16 or fp16, got {amp!r}")
    if amp != "none" and torch.device(device).type != "cuda":
        warnings.warn(f"training.amp: {amp} needs a CUDA device; training on {device} in float32", stacklevel=2)
        return "none"
    return amp


def autocast(amp: str, device: torch.device):
    """The autocast context of a forward pass (a no-op context for ``amp == "none"``)."""
    if amp == "none":
        return contextlib.nullcontext()
    return torch.autocast(torch.device(device).type, dtype=AMP_DTYPES[amp])


def make_scaler(amp: str, device: torch.device) -> torch.amp.GradScaler:
    """A GradScaler that is active for fp16 only (disabled, it passes the loss and the step through)."""
    return torch.amp.GradScaler(torch.device(device).type, enabled=amp == "fp16")


def backward(loss: torch.Tensor, scaler: torch.amp.GradScaler) -> None:
    scaler.scale(loss).backward()


def clip_and_step(optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler, params, grad_clip: float | None):
    """Unscale (fp16) -> clip the true gradient norm to ``grad_clip`` -> one optimizer step -> update the scale."""
    if grad_clip:
        scaler.unscale_(optimizer)
        torch.nn.utils.clip_grad_norm_(params, grad_clip)
    scaler.step(optimizer)
    scaler.update()


def prepare_module(module: nn.Module, device: torch.device, channels_last: bool = False) -> nn.Module:
    """Move ``module`` to ``device`` (in place), NHWC parameters if ``channels_last``."""
    module.to(device)
    if channels_last:
        module.to(memory_format=torch.channels_last)
    return module


def maybe_compile(module: nn.Module, enabled: bool) -> nn.Module:
    """``torch.compile(module)`` if enabled (the compiled wrapper shares the module's parameters), else it."""
    return torch.compile(module) if enabled else module


def _map_tensors(value, fn):
    if isinstance(value, torch.Tensor):
        return fn(value)
    if isinstance(value, list):
        return [_map_tensors(v, fn) for v in value]
    if isinstance(value, dict):
        return {k: _map_tensors(v, fn) for k, v in value.items()}
    return value


def float_outputs(out: ModelOutput, amp: str, names=None) -> ModelOutput:
    """``out`` with the floating tensors of the fields ``names`` (default: all) in float32, autograd kept, for
    the loss after an autocast forward; ``out`` itself when ``amp == "none"``. float32 tensors are not copied."""
    if amp == "none":
        return out
    names = [f.name for f in fields(out)] if names is None else names

    def cast(t):
        return t.float() if t.is_floating_point() else t

    return replace(out, **{n: _map_tensors(getattr(out, n), cast) for n in names})


def teacher_forward(teacher: nn.Module, x: torch.Tensor, names, amp: str = "none") -> ModelOutput:
    """The frozen teacher's outputs for ``x`` under ``inference_mode`` (and autocast), with the fields ``names``
    (a method's ``teacher_outputs``) copied out as ordinary float32 tensors that autograd may save. Other
    fields stay inference tensors: read only the declared ones."""
    with torch.inference_mode(), autocast(amp, x.device):
        out = teacher(x)

    def copy(t):
        return t.to(torch.float32, copy=True) if t.is_floating_point() else t.clone()

    return replace(out, **{n: _map_tensors(getattr(out, n), copy) for n in names})
