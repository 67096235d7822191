"""specens.inference: the top layer. The combination of docs/method.md §5 (:func:`combine_distributions`),
the routed, sparse :class:`Ensemble`, batch inference and evaluation; its ``cli`` module is the
``specens`` command.

The names below are imported from their modules on first use (torch), so that importing
``specens.inference.cli`` for ``specens infer --help`` does not import torch."""

from __future__ import annotations

from typing import TYPE_CHECKING

from specens.core.lazy import lazy_exports

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


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, __all__)
