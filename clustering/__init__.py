"""specens.clustering: groups of classes the generalist confuses (docs/method.md §3).

from specens.clustering import ClusterReport, ConfusionClusterer, prediction_covariance
from specens.clustering import cluster_predictions  # groups from any model's predictions file

The names below are imported from their modules on first use (torch, scikit-learn), so that
importing ``specens.clustering.cli`` for ``specens cluster --help`` imports neither.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from specens.core.lazy import lazy_exports

if TYPE_CHECKING:
    from .cluster import cluster_predictions
    from .covariance import CovarianceAccumulator, prediction_covariance
    from .groups import ConfusionClusterer
    from .predictions import load_predictions
    from .report import ClusterReport

_EXPORTS = {
    "ClusterReport": ".report",
    "ConfusionClusterer": ".groups",
    "CovarianceAccumulator": ".covariance",
    "cluster_predictions": ".cluster",
    "load_predictions": ".predictions",
    "prediction_covariance": ".covariance",
}

__all__ = [
    "ClusterReport",
    "ConfusionClusterer",
    "CovarianceAccumulator",
    "cluster_predictions",
    "load_predictions",
    "prediction_covariance",
]


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, __all__)
