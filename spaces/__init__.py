"""Named search spaces. A registry filled by `@register_space` on small builder functions.

The space's name is the builder's name; registering a name twice raises (a silently replaced
space would change what a run searches). Add a family by adding a module to this package (every
module whose name does not start with "_" is imported, in name order: nothing else to edit), or,
outside this package, by naming its module in the environment variable EXITSEARCH_SPACES.
"""

from __future__ import annotations

from collections.abc import Callable

from spaces._base import Budget, Option, Space, number_value, path_value
from trainables.registry import Registry

__all__ = ["Budget", "Option", "Space", "get_space", "list_spaces", "number_value", "path_value", "plugin_errors", "register_space"]

_SPACES: Registry[Callable[[], Space]] = Registry("space")
register_space = _SPACES.register
list_spaces = _SPACES.names


def get_space(name: str) -> Space:
    space = _SPACES[name]()
    if space.name != name:
        raise ValueError(f"space builder {name!r} returned a space named {space.name!r}")
    return space


def _load_builtins() -> None:
    """Import every public module of this package (each registers its space)."""
    import importlib
    import pkgutil

    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        if not info.name.startswith("_"):
            importlib.import_module(f"{__name__}.{info.name}")


_load_builtins()


_PLUGIN_ERRORS: list[str] = []


def plugin_errors() -> list[str]:
    """What went wrong importing the EXITSEARCH_SPACES modules ("module: error"), if anything.
    Importing this package never fails on a bad plugin (`--help` must work); the CLI refuses to
    run while this list is not empty."""
    return list(_PLUGIN_ERRORS)


def _load_plugins() -> None:
    """Spaces defined outside this package: EXITSEARCH_SPACES="pkg.mod1,pkg.mod2" imports them
    (in the driver and, through the inherited environment, in every Ray worker)."""
    import importlib
    import os

    for mod in filter(None, (m.strip() for m in os.environ.get("EXITSEARCH_SPACES", "").split(","))):
        try:
            importlib.import_module(mod)
        except Exception as exc:  # any error in someone else's module: reported, not raised here
            _PLUGIN_ERRORS.append(f"{mod!r} ({type(exc).__name__}: {exc})")


_load_plugins()
