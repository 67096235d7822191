"""specens.clustering: groups of classes the generalist confuses (METHOD §3).

from specens.clustering import ClusterReport, ConfusionClusterer, prediction_covariance
"""

from .covariance import CovarianceAccumulator, prediction_covariance
from .groups import ConfusionClusterer
from .report import ClusterReport

__all__ = ["ClusterReport", "ConfusionClusterer", "CovarianceAccumulator", "prediction_covariance"]
