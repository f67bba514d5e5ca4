"""A tiny name -> factory registry with explicit, discoverable plug-in packages.

Each plug-in package (e.g. ``distillery.losses.methods``) holds one module per entry; the registry imports
the whole package itself the first time it is queried, so no caller has to remember an import for
registration to happen (the classic "not in the registry" trap).
"""

from __future__ import annotations

import difflib
import importlib
import pkgutil
from typing import Callable, Generic, TypeVar

T = TypeVar("T")


class UnknownNameError(KeyError):
    """An unknown registry name; the message lists the nearest valid choices."""

    def __str__(self) -> str:  # KeyError would otherwise quote the message
        return str(self.args[0])


class Registry(Generic[T]):
    """Maps lower-case names to factories; ``plugin_package`` is imported lazily on first lookup."""

    def __init__(self, kind: str, plugin_package: str | None = None):
        self.kind = kind
        self.plugin_package = plugin_package
        self._entries: dict[str, T] = {}
        self._loaded = plugin_package is None

    def register(self, name: str) -> Callable[[T], T]:
        key = name.lower()

        def decorator(obj: T) -> T:
            if key in self._entries and self._entries[key] is not obj:
                raise ValueError(f"{self.kind} {key!r} is registered twice")
            self._entries[key] = obj
            return obj

        return decorator

    def _load(self) -> None:
        if self._loaded:
            return
        self._loaded = True
        package = importlib.import_module(self.plugin_package)
        for info in pkgutil.iter_modules(package.__path__):
            if not info.name.startswith("_"):
                importlib.import_module(f"{self.plugin_package}.{info.name}")

    def names(self) -> list[str]:
        self._load()
        return sorted(self._entries)

    def get(self, name: str) -> T:
        self._load()
        key = str(name).lower()
        if key not in self._entries:
            raise UnknownNameError(unknown_choice_message(self.kind, name, self._entries))
        return self._entries[key]

    def __contains__(self, name: str) -> bool:
        self._load()
        return str(name).lower() in self._entries


def unknown_choice_message(kind: str, name: object, choices) -> str:
    """One line: 'unknown <kind> 'x'; did you mean 'y'? (valid: a, b, c)'."""
    choices = sorted(choices)
    close = difflib.get_close_matches(str(name), choices, n=1, cutoff=0.5)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    return f"unknown {kind} {name!r}{hint} (valid: {', '.join(choices)})"
