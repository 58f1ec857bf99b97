"""Named search spaces. A registry filled by `@register_space` on small builder functions.

The space's name is the builder's name; registering a name twice raises (a silently replaced
space would change what a run searches). Add a family by adding a module here and importing it
at the bottom of this file, or, outside this package, by naming its module in the environment
variable EXITSEARCH_SPACES.
"""

from __future__ import annotations

from collections.abc import Callable

from spaces._base import Budget, Space

__all__ = ["Budget", "Space", "get_space", "list_spaces", "register_space"]

_SPACES: dict[str, Callable[[], Space]] = {}


def register_space(fn: Callable[[], Space]) -> Callable[[], Space]:
    name = fn.__name__
    if name in _SPACES:
        raise ValueError(f"space {name!r} is already registered")
    _SPACES[name] = fn
    return fn


def list_spaces() -> list[str]:
    return sorted(_SPACES)


def get_space(name: str) -> Space:
    try:
        builder = _SPACES[name]
    except KeyError:
        raise KeyError(f"unknown space {name!r}; known spaces: {', '.join(list_spaces())}") from None
    space = builder()
    if space.name != name:
        raise ValueError(f"space builder {name!r} returned a space named {space.name!r}")
    return space


from spaces import gran_hbn as _gran_hbn  # noqa: E402,F401


def _load_plugins() -> None:
    """Spaces defined outside this package: EXITSEARCH_SPACES="pkg.mod1,pkg.mod2" imports them
    (in the driver and, through the inherited environment, in every Ray worker)."""
    import importlib
    import os

    for mod in filter(None, (m.strip() for m in os.environ.get("EXITSEARCH_SPACES", "").split(","))):
        importlib.import_module(mod)


_load_plugins()
