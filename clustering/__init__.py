"""specens.clustering: groups of classes the generalist confuses (docs/method.md §3).

from specens.clustering import ClusterReport, ConfusionClusterer, prediction_covariance

The names below are imported from their modules on first use (torch, scikit-learn), so that
importing ``specens.clustering.cli`` for ``specens cluster --help`` imports neither.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .covariance import CovarianceAccumulator, prediction_covariance
    from .groups import ConfusionClusterer
    from .report import ClusterReport

_EXPORTS = {
    "ClusterReport": ".report",
    "ConfusionClusterer": ".groups",
    "CovarianceAccumulator": ".covariance",
    "prediction_covariance": ".covariance",
}

__all__ = ["ClusterReport", "ConfusionClusterer", "CovarianceAccumulator", "prediction_covariance"]


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name], __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
