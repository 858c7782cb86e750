"""Packages whose public names load on first use, so that `nextscale --help` and the flags the command line builds
from the sampler's and the trainer's settings answer without importing torch."""

from __future__ import annotations

import importlib
import sys


def lazy_exports(package: str, names: dict[str, str], submodules: tuple[str, ...] = ()):
    """A module-level `__getattr__` for `package`: `names[name]` is the submodule that defines `name`, imported
    (and the name kept in the package) when first asked for; `submodules` may be asked for as attributes too."""

    def __getattr__(name: str):
        if name in names:
            value = getattr(importlib.import_module(f".{names[name]}", package), name)
            setattr(sys.modules[package], name, value)
            return value
        if name in submodules:
            return importlib.import_module(f".{name}", package)
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    return __getattr__
