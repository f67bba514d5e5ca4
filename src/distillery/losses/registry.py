"""Method registry (API.md section 2): ``build_method(name, **hyperparameters)`` -> Distiller module."""

from __future__ import annotations

import inspect

from distillery.utils.registry import Registry

METHODS: Registry = Registry("method", "distillery.losses.methods")


def register_method(name: str):
    """Class decorator: register a Distiller subclass under ``name`` (also its params.yaml group name)."""

    def decorator(cls):
        cls.registered_name = name.lower()
        return METHODS.register(name)(cls)

    return decorator


def available_methods() -> list[str]:
    return METHODS.names()


def method_hyperparameters(name: str) -> dict:
    """Constructor keyword arguments of method ``name`` with their defaults (params.yaml ``methods.<name>``)."""
    signature = inspect.signature(METHODS.get(name))
    return {p.name: p.default for p in signature.parameters.values()
            if p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)}


def build_method(name: str, **hyperparameters) -> Distiller:
    """Instantiate method ``name``; an unknown name or hyper-parameter is a one-line error naming the valid ones."""
    cls = METHODS.get(name)
    valid = method_hyperparameters(name)
    unknown = sorted(set(hyperparameters) - set(valid))
    if unknown:
        raise TypeError(f"method {name!r} has no hyper-parameter(s) {unknown} (valid: {', '.join(sorted(valid))})")
    return cls(**hyperparameters)
