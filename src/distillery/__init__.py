"""Distillery: knowledge distillation for image retrieval and classification."""

__version__ = "0.1.0"
