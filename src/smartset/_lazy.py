"""Packages whose public names load on first use, so importing them (and the CLI) stays
fast and free of heavy dependencies such as torch."""

from __future__ import annotations

import importlib
from collections.abc import Callable


def lazy_exports(package: str, exports: dict[str, list[str]],
                 submodules: dict[str, str] | None = None
                 ) -> tuple[list[str], Callable[[str], object], Callable[[], list[str]]]:
    """``(__all__, __getattr__, __dir__)`` for ``package``: ``exports`` maps a module to
    the names it provides; ``submodules`` maps a public name to a module returned whole."""
    where = {name: module for module, names in exports.items() for name in names}
    submodules = dict(submodules or {})
    public = sorted(where) + sorted(submodules)

    def __getattr__(name: str):
        if name in submodules:
            return importlib.import_module(submodules[name])
        if name in where:
            return getattr(importlib.import_module(where[name]), name)
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    def __dir__() -> list[str]:
        return public

    return public, __getattr__, __dir__
