"""Backbones with one uniform output (``ModelOutput``) and the retrieval/classification heads."""

from distillery.models.output import ModelOutput
from distillery.models.registry import available_models, build_model, register_model

__all__ = ["ModelOutput", "available_models", "build_model", "register_model"]
