"""Groups of confusable classes from k-means on the covariance columns (docs/method.md §3; paper §5.3).

:class:`ConfusionClusterer` follows the scikit-learn estimator contract: ``__init__`` stores
parameters, ``fit``/``fit_covariance`` validate and return ``self``, learned attributes end in
``_``, and every random step takes ``random_state``.

The steps, each a small function:

1. :func:`column_features`: each class j becomes a point, the column Σ[:, j], transformed as
   ``representation`` says (the diagonal is the class's own variance and dominates the literal
   columns' distances, so the default removes it and normalises — docs/method.md §3 lists the choices;
   ``benchmarks/cluster_choices.py`` measures them against known groups).
2. optionally reduced to ``n_components`` dimensions by randomized SVD (needed at large C).
3. k-means (full, or scikit-learn's on-line ``MiniBatchKMeans``), once or over several seeds.
4. :func:`assign_overlapping`: each class joins its nearest centroid's group and, with
   ``overlap`` r ≥ 1, every group whose centroid is within r × that distance.
5. :func:`bound_sizes`: groups larger than ``max_size`` are split by k-means within the group,
   groups smaller than ``min_size`` merged into the nearest group (or dropped), duplicates removed.
   Classes the generalist never confuses (``min_confusion``) are left to the generalist alone.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from numbers import Integral, Real

import numpy as np
from sklearn.base import BaseEstimator
from sklearn.cluster import KMeans, MiniBatchKMeans
from sklearn.utils._param_validation import Interval, InvalidParameterError, StrOptions, validate_parameter_constraints
from sklearn.utils.extmath import randomized_svd
from sklearn.utils.validation import check_is_fitted

from .covariance import check_probabilities, prediction_covariance

REPRESENTATIONS = ("literal", "offdiag", "correlation", "offdiag-scaled")


def column_features(cov: np.ndarray, representation: str = "correlation") -> np.ndarray:
    """The point representing each class: row j of the result is class j's (transformed) column.

    - ``literal``: Σ[:, j] as it is.
    - ``offdiag``: the diagonal replaced by zero.
    - ``correlation``: Σ_ij / sqrt(Σ_ii Σ_jj) with the diagonal zeroed: scale-free, so rare and
      frequent classes weigh the same.
    - ``offdiag-scaled``: the diagonal zeroed, then each column scaled to unit norm.

    cov: (C, C) symmetric. Returns float64 of shape (C, C), one copy of ``cov``: because Σ is
    symmetric, row j of the transformed matrix is column j.
    """
    f = np.array(cov, dtype=np.float64)
    if representation == "literal":
        return f
    if representation == "correlation":
        d = np.sqrt(np.clip(np.diag(f), 1e-300, None))
        f /= d[:, None]
        f /= d[None, :]
    elif representation not in ("offdiag", "offdiag-scaled"):
        raise ValueError(f"representation must be one of {REPRESENTATIONS}, got {representation!r}")
    np.fill_diagonal(f, 0.0)
    if representation == "offdiag-scaled":
        f /= np.maximum(np.linalg.norm(f, axis=1, keepdims=True), 1e-300)  # row j = column j, unit norm
    return f


def confusion_scores(cov: np.ndarray) -> np.ndarray:
    """Per class: positive off-diagonal covariance mass relative to the class's own variance,
    Σ_{i≠j} max(Σ_ij, 0) / Σ_jj. Near 0 for a class the generalist never confuses. Shape (C,)."""
    cov = np.asarray(cov)
    diag = np.clip(np.diag(cov).astype(np.float64), 1e-300, None)
    pos_rows = np.concatenate([np.clip(cov[i : i + 1024], 0, None).sum(1) for i in range(0, len(cov), 1024)])
    return (pos_rows - np.clip(np.diag(cov), 0, None)) / diag  # row sums = column sums (symmetric)


def group_confusability(cov: np.ndarray, group: np.ndarray) -> float:
    """Share of the group's classes' positive off-diagonal covariance that stays inside the group:
    1 when they are confused only with each other, near |S|/C when the group is arbitrary."""
    pos = np.clip(np.asarray(cov, dtype=np.float64)[group], 0, None)  # (|S|, C)
    pos[np.arange(len(group)), group] = 0.0
    total = pos.sum()
    return float(pos[:, group].sum() / total) if total > 0 else 0.0


def assign_overlapping(distances: np.ndarray, overlap: float | None) -> list[np.ndarray]:
    """Groups from class-to-centroid distances (C, K): nearest centroid, plus every centroid within
    ``overlap`` × the nearest distance when ``overlap`` is given (≥ 1). Returns K sorted arrays."""
    nearest = distances.min(1, keepdims=True)  # (C, 1)
    member = distances <= nearest if overlap is None else distances <= overlap * nearest + 1e-12
    return [np.flatnonzero(member[:, k]) for k in range(distances.shape[1])]


def _kmeans(x: np.ndarray, k: int, algorithm: str, seed: int):
    if algorithm == "minibatch":
        km = MiniBatchKMeans(n_clusters=k, random_state=seed, n_init=3, batch_size=min(4096, max(256, len(x))))
    else:
        km = KMeans(n_clusters=k, random_state=seed, n_init=4)
    return km.fit(x)


def bound_sizes(
    groups: list[np.ndarray],
    features: np.ndarray,
    min_size: int,
    max_size: int | None,
    small: str,
    algorithm: str,
    seed: int,
) -> list[np.ndarray]:
    """Split groups above ``max_size`` (k-means inside the group), then merge groups below
    ``min_size`` into the group with the nearest centroid (``small="merge"``, when the result stays
    within ``max_size``) or drop them (``small="drop"``), and remove duplicate groups."""
    out: list[np.ndarray] = []
    todo = [g for g in groups if len(g)]
    while todo:
        g = todo.pop()
        if max_size is not None and len(g) > max_size:
            parts = -(-len(g) // max_size)  # ceil
            labels = _kmeans(features[g], parts, algorithm, seed).labels_
            pieces = [g[labels == p] for p in range(parts)]
            if max(len(p) for p in pieces) == len(g):  # k-means could not split (identical points)
                pieces = [g[i::parts] for i in range(parts)]
            todo += [p for p in pieces if len(p)]
        else:
            out.append(np.sort(g))
    small_groups = [g for g in out if len(g) < min_size]
    big = [g for g in out if len(g) >= min_size]
    if small == "merge" and big:
        for g in small_groups:
            centres = np.stack([features[b].mean(0) for b in big])
            order = np.argsort(np.linalg.norm(centres - features[g].mean(0), axis=1))
            for b in order:
                if max_size is None or len(big[b]) + len(g) <= max_size:
                    big[b] = np.union1d(big[b], g)
                    break
    unique = {tuple(g.tolist()): g for g in big}
    return sorted(unique.values(), key=lambda g: (g[0], len(g)))


# -- choosing K -------------------------------------------------------------------------------


def error_capture(groups: Sequence[np.ndarray], y_true: np.ndarray, y_pred: np.ndarray, n_classes: int) -> dict:
    """Share of top-1 errors (y_pred ≠ y_true) whose two classes share a group.

    Returns {"errors": n, "captured": share overall, "per_group": [share of all errors captured by
    group g, for each g]}; an error counts for every group holding both its classes.
    """
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    wrong = y_true != y_pred
    n_err = int(wrong.sum())
    member = np.zeros((len(groups), n_classes), dtype=bool)  # (G, C)
    for g, cls in enumerate(groups):
        member[g, cls] = True
    both = member[:, y_true[wrong]] & member[:, y_pred[wrong]]  # (G, errors)
    return {
        "errors": n_err,
        "captured": float(both.any(0).sum() / n_err) if n_err else 0.0,
        "per_group": [float(v / n_err) if n_err else 0.0 for v in both.sum(1)],
    }


def n_groups_candidates(n_classes: int, min_mean_size: int, max_groups: int) -> list[int]:
    """The K :func:`choose_n_groups` tries: 2, 3, 4, 6, 8, 12, 16, … (two per octave), each at
    most ``max_groups`` and with groups of ``min_mean_size`` classes or more on average."""
    top = min(max_groups, n_classes // max(min_mean_size, 1))
    grid = [k for i in range(1, top.bit_length() + 1) for k in (2**i, 3 * 2 ** (i - 1)) if 2 <= k <= top]
    return sorted(set(grid)) or [min(2, n_classes)]


def choose_n_groups(
    fit: Callable[[int], Sequence[np.ndarray]],
    y_true: np.ndarray,
    y_pred: np.ndarray,
    n_classes: int,
    *,
    min_capture: float = 0.5,
    min_mean_size: int = 8,
    max_groups: int = 32,
) -> tuple[int, list[dict]]:
    """The number of groups K from the class count and the generalist's errors (docs/method.md §3).

    A specialist can only fix an error whose true and predicted classes share its group, so the
    share of the generalist's top-1 errors the groups capture (:func:`error_capture`) bounds what
    the ensemble can gain; it falls as K grows. Smaller groups make sharper specialists. The
    choice: the largest K of :func:`n_groups_candidates` whose groups (``fit(K)``) still capture
    at least ``min_capture`` of the errors; the K of highest capture if none does. Without
    labelled errors there is nothing to measure: K = min(8, the largest candidate).

    Returns (K, one row per candidate tried: k, groups made, captured share).
    """
    grid = n_groups_candidates(n_classes, min_mean_size, max_groups)
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    if not (y_true != y_pred).any():
        return max([k for k in grid if k <= 8] or grid[:1]), []
    rows = []
    for k in grid:
        groups = fit(k)
        rows.append(
            {"k": k, "groups": len(groups), "captured": error_capture(groups, y_true, y_pred, n_classes)["captured"]}
        )
    passing = [r["k"] for r in rows if r["captured"] >= min_capture]
    best = max(passing) if passing else max(rows, key=lambda r: r["captured"])["k"]
    return best, rows


class ConfusionClusterer(BaseEstimator):
    """Groups of classes the generalist confuses, for specialists to own (docs/method.md §3).

    Parameters:
        n_groups: K, the number of k-means clusters (before size bounds), or ``"auto"``: the
            largest K of :func:`n_groups_candidates` whose groups still capture ``min_capture``
            of the model's top-1 errors (:func:`choose_n_groups`; the labels ``y`` given to
            :meth:`fit`), at most ``max_groups``, with ``min_mean_size`` classes a group on
            average; without labels, 8 (or the largest candidate below).
        representation: how a class's covariance column is turned into a point
            (see :func:`column_features`); default ``"offdiag-scaled"``, the best or near best on
            known groups (``benchmarks/cluster_choices.py``).
        algorithm: ``"kmeans"`` (full) or ``"minibatch"`` (the on-line k-means of the paper).
        n_components: reduce the points to this many dimensions by randomized SVD before k-means;
            ``"auto"`` does so (to 128) when C > 2,000; None never.
        overlap: None for disjoint groups, or a distance ratio r ≥ 1: a class also joins every group
            whose centroid lies within r × its distance to the nearest centroid.
        n_runs: k-means runs with seeds ``random_state + i`` whose groups are merged and
            de-duplicated (another way to get overlapping groups).
        min_size, max_size: group size bounds (see :func:`bound_sizes`); ``small`` is ``"merge"``
            or ``"drop"`` for groups below ``min_size``.
        min_confusion: classes whose :func:`confusion_scores` fall below this stay in no group.
        random_state: seed of every random step.

    Attributes (after fitting):
        n_groups_: the K used (``n_groups``, or the one chosen).
        n_groups_search_: the automatic choice's rows (k, groups made, share of errors captured);
            empty when ``n_groups`` is a number or no labelled error was given.
        groups_: list of sorted int64 arrays of class indices.
        labels_: int64 (C,), the first group holding each class (index into ``groups_``), -1 for
            a class in no group.
        covariance_: (C, C) the covariance the groups came from.
        features_: (C, d) the points k-means saw.
        cluster_centers_: (K, d) the first run's centroids.
        confusability_: float per group (:func:`group_confusability`).
        n_features_in_: C.
    """

    # The parameters' constraints, the scikit-learn way; ``check_params`` reports every one broken.
    _parameter_constraints: dict = {
        "n_groups": [Interval(Integral, 1, None, closed="left"), StrOptions({"auto"})],
        "min_capture": [Interval(Real, 0, 1, closed="both")],
        "min_mean_size": [Interval(Integral, 1, None, closed="left")],
        "max_groups": [Interval(Integral, 2, None, closed="left")],
        "representation": [StrOptions(set(REPRESENTATIONS))],
        "algorithm": [StrOptions({"kmeans", "minibatch"})],
        "n_components": [Interval(Integral, 1, None, closed="left"), StrOptions({"auto"}), None],
        "overlap": [Interval(Real, 1, None, closed="left"), None],
        "n_runs": [Interval(Integral, 1, None, closed="left")],
        "min_size": [Interval(Integral, 1, None, closed="left")],
        "max_size": [Interval(Integral, 1, None, closed="left"), None],
        "small": [StrOptions({"merge", "drop"})],
        "min_confusion": [Interval(Real, 0, None, closed="left")],
        "random_state": [Interval(Integral, 0, None, closed="left")],
    }

    def __init__(
        self,
        n_groups: int | str = "auto",
        *,
        min_capture: float = 0.5,
        min_mean_size: int = 8,
        max_groups: int = 32,
        representation: str = "offdiag-scaled",
        algorithm: str = "kmeans",
        n_components: int | str | None = "auto",
        overlap: float | None = None,
        n_runs: int = 1,
        min_size: int = 2,
        max_size: int | None = None,
        small: str = "merge",
        min_confusion: float = 0.0,
        random_state: int = 0,
    ):
        self.n_groups, self.representation, self.algorithm = n_groups, representation, algorithm
        self.min_capture, self.min_mean_size, self.max_groups = min_capture, min_mean_size, max_groups
        self.n_components, self.overlap, self.n_runs = n_components, overlap, n_runs
        self.min_size, self.max_size, self.small = min_size, max_size, small
        self.min_confusion, self.random_state = min_confusion, random_state

    # -- fitting -------------------------------------------------------------------------------

    def fit(self, probs, y=None) -> ConfusionClusterer:
        """Fit from soft predictions, an array of shape (n_samples, n_classes) with rows on the
        simplex; ``y`` (n_samples,), the true labels, lets ``n_groups="auto"`` measure how many of
        the model's top-1 errors (``probs.argmax(1)``) the groups capture."""
        p = np.asarray(probs)
        check_probabilities(p)
        y_pred = p.argmax(1) if y is not None else None
        return self.fit_covariance(prediction_covariance([p], p.shape[1]).covariance(), y, y_pred)

    def fit_covariance(self, cov, y_true=None, y_pred=None) -> ConfusionClusterer:
        """Fit from a covariance matrix of shape (n_classes, n_classes); ``y_true`` and ``y_pred``
        (n,), labels and the model's top-1 predictions on the same examples, for ``"auto"``."""
        cov = np.asarray(cov, dtype=np.float64)
        self._validate(cov)
        c = cov.shape[0]
        features = column_features(cov, self.representation)
        d = self.n_components
        if d == "auto":
            d = 128 if c > 2000 else None
        if d is not None and d < c:
            u, s, _ = randomized_svd(features, n_components=d, random_state=self.random_state)
            features = u * s  # (C, d): distances of the rank-d approximation's rows
        if self.n_groups == "auto":
            fitted: dict[int, tuple[list[np.ndarray], np.ndarray]] = {}  # each K tried, fitted once

            def fit(k: int) -> list[np.ndarray]:
                fitted[k] = self._groups(cov, features, k)
                return fitted[k][0]

            none = np.zeros(0, dtype=np.int64)
            k, self.n_groups_search_ = choose_n_groups(
                fit,
                none if y_true is None else y_true,
                none if y_pred is None else y_pred,
                c,
                min_capture=self.min_capture,
                min_mean_size=self.min_mean_size,
                max_groups=self.max_groups,
            )
            groups, centers = fitted[k] if k in fitted else self._groups(cov, features, k)
        else:
            k, self.n_groups_search_ = self.n_groups, []
            groups, centers = self._groups(cov, features, k)
        labels = np.full(c, -1, dtype=np.int64)
        for gi in reversed(range(len(groups))):  # the first group holding the class
            labels[groups[gi]] = gi
        self.n_groups_, self.cluster_centers_ = k, centers
        self.groups_ = [grp.astype(np.int64) for grp in groups]
        self.labels_ = labels
        self.covariance_, self.features_ = cov, features
        self.confusability_ = np.array([group_confusability(cov, grp) for grp in self.groups_])
        self.n_features_in_ = c
        return self

    def _groups(self, cov: np.ndarray, features: np.ndarray, k: int) -> tuple[list[np.ndarray], np.ndarray]:
        """The groups of ``k`` k-means clusters over the confused classes (every run merged),
        within the size bounds, and the first run's centroids."""
        c = cov.shape[0]
        keep = confusion_scores(cov) >= self.min_confusion if self.min_confusion > 0 else np.ones(c, bool)
        idx = np.flatnonzero(keep)
        if len(idx) < k:
            raise ValueError(
                f"only {len(idx)} classes pass min_confusion={self.min_confusion}, fewer than n_groups={k}"
            )
        groups: list[np.ndarray] = []
        centers = None
        for run in range(self.n_runs):
            km = _kmeans(features[idx], k, self.algorithm, self.random_state + run)
            dist = km.transform(features[idx])  # (C', K)
            groups += [idx[grp] for grp in assign_overlapping(dist, self.overlap)]
            if run == 0:
                centers = km.cluster_centers_
        sizes = (self.min_size, self.max_size, self.small)
        return bound_sizes(groups, features, *sizes, self.algorithm, self.random_state), centers

    def _validate(self, cov: np.ndarray) -> None:
        if cov.ndim != 2 or cov.shape[0] != cov.shape[1]:
            raise ValueError(f"covariance must be square (n_classes, n_classes), got shape {cov.shape}")
        if not np.isfinite(cov).all():
            raise ValueError("covariance holds NaN or infinite values")
        tol = 1e-8 + 1e-6 * float(np.abs(np.diag(cov)).max())
        for i in range(0, len(cov), 1024):  # block-wise: no C×C temporaries
            if np.abs(cov[i : i + 1024] - cov[:, i : i + 1024].T).max() > tol:
                raise ValueError("covariance is not symmetric")
        self.check_params(cov.shape[0])

    def check_params(self, n_classes: int | None = None, where: str = "") -> None:
        """Raise one :class:`ValueError` listing every parameter that breaks its constraint
        (``_parameter_constraints``); with ``n_classes``, also ``n_groups`` against the label
        space (of ``where``, named in the message). Runs before any data is read (``ClusterConfig``)."""
        problems = []
        for name, constraints in self._parameter_constraints.items():
            try:
                validate_parameter_constraints(
                    {name: constraints}, {name: getattr(self, name)}, caller_name=type(self).__name__
                )
            except InvalidParameterError as e:
                problems.append(str(e).removesuffix("."))
        if not problems and n_classes is not None and self.n_groups != "auto" and self.n_groups >= n_classes:
            problems.append(
                f"n_groups must be below the {n_classes} classes{f' of {where}' if where else ''} (a specialist's "
                f"dustbin needs classes outside its group), got {self.n_groups}"
            )
        if not problems and self.max_size is not None and self.max_size < self.min_size:
            problems.append(f"ConfusionClusterer: max_size={self.max_size} is below min_size={self.min_size}")
        if problems:
            raise ValueError("; ".join(problems))

    # -- fitted --------------------------------------------------------------------------------

    def coverage(self) -> np.ndarray:
        """How many groups hold each class: int64 (n_classes,)."""
        check_is_fitted(self)
        counts = np.zeros(self.n_features_in_, dtype=np.int64)
        for g in self.groups_:
            counts[g] += 1
        return counts
