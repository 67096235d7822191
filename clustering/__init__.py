"""specens.clustering: groups of classes the generalist confuses (METHOD §3).

    from specens.clustering import ConfusionClusterer, ClusterReport, prediction_covariance
"""

from .covariance import CovarianceAccumulator, prediction_covariance
from .groups import ConfusionClusterer

__all__ = ["ConfusionClusterer", "CovarianceAccumulator", "prediction_covariance"]
