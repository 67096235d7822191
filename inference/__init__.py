"""specens.inference: the top layer. The combination of METHOD §5 (:func:`combine_distributions`),
the routed, sparse :class:`Ensemble`, batch inference and evaluation; its ``cli`` module is the
``specens`` command."""

from .combine import combine_distributions
from .ensemble import Ensemble, EnsembleOutput, route

__all__ = ["combine_distributions", "Ensemble", "EnsembleOutput", "route"]
