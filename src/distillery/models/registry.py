"""Model registry: ``build_model(name, **kwargs)``; architectures live one family per module in ``models.zoo``."""

from __future__ import annotations

import torch.nn as nn

from distillery.utils.registry import Registry

MODELS: Registry = Registry("model", "distillery.models.zoo")
register_model = MODELS.register


def build_model(name: str, **kwargs) -> nn.Module:
    """Instantiate a registered architecture; its ``forward`` returns a ``ModelOutput``."""
    return MODELS.get(name)(**kwargs)


def available_models() -> list[str]:
    return MODELS.names()
