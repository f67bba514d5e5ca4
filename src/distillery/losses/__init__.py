"""Losses: the pure math (``functional``) and the method modules built through the registry."""

from distillery.losses.base import Distiller
from distillery.losses.registry import available_methods, build_method, register_method

__all__ = ["Distiller", "available_methods", "build_method", "register_method"]
