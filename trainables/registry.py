"""The one registry type behind spaces, backbones and datasets (torchvision-strict).

A builder registers under its function's name; registering a name twice raises, since a silently
replaced entry would change what a run builds. `names()` feeds the CLI's help and the
parametrized tests.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Generic, TypeVar

__all__ = ["Registry"]

F = TypeVar("F", bound=Callable)


class Registry(Generic[F]):
    def __init__(self, kind: str, unknown_error: type[Exception] = KeyError) -> None:
        self.kind = kind
        self.unknown_error = unknown_error
        self._items: dict[str, F] = {}

    def register(self, fn: F) -> F:
        name = fn.__name__
        if name in self._items:
            raise ValueError(f"{self.kind} {name!r} is already registered (by {self._items[name].__module__})")
        self._items[name] = fn
        return fn

    def names(self) -> list[str]:
        return sorted(self._items)

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __getitem__(self, name: str) -> F:
        try:
            return self._items[name]
        except KeyError:
            raise self.unknown_error(f"unknown {self.kind} {name!r}; known {self.kind}s: {', '.join(self.names())}") from None
