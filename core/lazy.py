"""A package whose public names are imported from their modules on first use (PEP 562), so that
importing one light submodule (a command's ``--help``) does not import torch or scikit-learn."""

from __future__ import annotations

import importlib
from collections.abc import Callable


def lazy_exports(package: str, exports: dict[str, str], names: list[str]) -> tuple[Callable, Callable]:
    """The ``__getattr__`` and ``__dir__`` of ``package``, which exports ``names``, each from the
    module ``exports[name]`` (relative to ``package``), imported on first access and then kept in
    the package's namespace::

        __getattr__, __dir__ = lazy_exports(__name__, {"Ensemble": ".ensemble"}, __all__)
    """
    module = importlib.import_module(package)

    def __getattr__(name: str):
        if name not in exports:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(exports[name], package), name)
        setattr(module, name, value)
        return value

    def __dir__() -> list[str]:
        return sorted(set(vars(module)) | set(names))

    return __getattr__, __dir__
