"""specens.inference: the top layer. The combination of docs/method.md §5 (:func:`combine_distributions`),
the routed, sparse :class:`Ensemble`, batch inference and evaluation; its ``cli`` module is the
``specens`` command.

The names below are imported from their modules on first use (torch), so that importing
``specens.inference.cli`` for ``specens infer --help`` does not import torch."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .combine import combine_distributions
    from .ensemble import Ensemble, EnsembleOutput, route

_EXPORTS = {
    "combine_distributions": ".combine",
    "Ensemble": ".ensemble",
    "EnsembleOutput": ".ensemble",
    "route": ".ensemble",
}

__all__ = ["combine_distributions", "Ensemble", "EnsembleOutput", "route"]


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name], __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
