"""Model registry: ``build_model(name, **kwargs)``; architectures live one family per module in ``models.zoo``."""

from __future__ import annotations

import inspect

import torch.nn as nn

from distillery.utils.registry import Registry

MODELS: Registry = Registry("model", "distillery.models.zoo")
register_model = MODELS.register


def build_model(name: str, **kwargs) -> nn.Module:
    """Instantiate a registered architecture; its ``forward`` returns a ``ModelOutput``."""
    return MODELS.get(name)(**kwargs)


def model_arguments(name: str) -> set[str]:
    """Keyword arguments accepted by model ``name``'s factory (following ``**kwargs`` into the class it builds)."""
    factory = MODELS.get(name)
    params = inspect.signature(factory).parameters
    names = {p.name for p in params.values() if p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)}
    if any(p.kind == p.VAR_KEYWORD for p in params.values()):
        built = inspect.signature(factory).return_annotation
        cls = factory.__globals__.get(built) if isinstance(built, str) else built
        if isinstance(cls, type):
            names |= {p for p in inspect.signature(cls).parameters if p not in ("args", "kwargs")}
    return names


def available_models() -> list[str]:
    return MODELS.names()
