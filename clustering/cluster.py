"""``specens cluster``: from a generalist and a transfer set, or from any model's predictions on a
labelled transfer set (:mod:`.predictions`), to ``clusters.json`` and a report.

``clusters.json`` holds the groups (by index and by name), the config that made them, and the
fingerprint of the generalist whose predictions they came from (or, made from a predictions file,
that file's, and no generalist's); later stages load it with :func:`load_clusters`, which refuses
groups made from another generalist, or from a predictions file, where a generalist's are needed.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch

from specens.core.config import DeviceParts, config_to_json, param
from specens.core.device import resolve_device
from specens.core.errors import CheckpointError, ConfigError
from specens.core.io import (
    check_outside_inputs,
    check_target,
    fingerprint,
    publish_dir,
    read_artifact_json,
    write_json_atomic,
)
from specens.core.progress import progress_bar
from specens.core.records import Record
from specens.data.format import INFO_FILE, load_info
from specens.data.shards import iter_split
from specens.generalist.checkpoint import load_generalist

from .covariance import CovarianceAccumulator, prediction_covariance, soft_predictions
from .groups import ConfusionClusterer
from .predictions import load_predictions
from .regime import RegimeCheck, examples_per_class, regime_check
from .report import ClusterReport, GroupsSearch, PredictionsSource, SearchRow

FORMAT, FORMAT_VERSION = "specens.clusters", 1
CLUSTER_FILES = (
    "clusters.json",
    "report.json",
    "covariance.png",
    "group_sizes.png",
)  # what `specens cluster` writes into its --out
WHAT = "a `specens cluster` output"


DEFAULT_TEMPERATURE = 4.0
_ESTIMATOR = ConfusionClusterer().get_params()  # the one source of the pass-through fields' defaults
ESTIMATOR_FIELDS = tuple(_ESTIMATOR)  # ClusterConfig passes these through unchanged


@dataclass(frozen=True, kw_only=True)
class ClusterConfig(DeviceParts):
    """Clustering (docs/method.md §3). ``specens cluster`` builds one from a TOML file (top level or a
    ``[cluster]`` table) and ``--set key=value`` overrides.

    The fields from ``n_groups`` to ``random_state`` are :class:`ConfusionClusterer`'s parameters,
    with its defaults, passed through as they are and checked by it; ``n_groups = "auto"`` (the
    default) chooses K from the error capture (:func:`~specens.clustering.groups.choose_n_groups`)."""

    SECTION: ClassVar[str] = "cluster"

    generalist: str = ""  # run directory of the generalist (with data; or predictions instead)
    data: str = ""  # dataset directory of the transfer set (labels are used for the report only)
    predictions: str = ""  # instead of generalist and data: .npz of any model's logits or probs, labels, classes
    out: str  # folder for clusters.json, report.json and the plots
    split: str = "val"  # the transfer set's split: held-out predictions show the real confusions
    temperature: float = param(DEFAULT_TEMPERATURE, gt=0)  # T of p = softmax_T(z); given probabilities q: q^(1/T)
    top_k: int = param(0, ge=0)  # 0 = exact covariance; k = sparse top-k second moment (for very large C)
    batch_size: int = param(512, ge=1)
    # ConfusionClusterer's parameters (see specens.clustering.groups):
    n_groups: int | str = _ESTIMATOR["n_groups"]  # K of k-means; "auto" (or 0): chosen from the error capture
    min_capture: float = _ESTIMATOR["min_capture"]  # "auto": the largest K whose groups capture this share of errors
    min_mean_size: int = _ESTIMATOR["min_mean_size"]  # "auto": groups of at least this many classes on average
    max_groups: int = _ESTIMATOR["max_groups"]  # "auto": at most this many specialists
    representation: str = _ESTIMATOR["representation"]
    algorithm: str = _ESTIMATOR["algorithm"]  # "kmeans" or "minibatch"
    n_components: int | str | None = _ESTIMATOR["n_components"]  # randomized-SVD dimension; "auto": 128 when C > 2000
    overlap: float | None = _ESTIMATOR["overlap"]  # None: disjoint groups; r >= 1: distance-ratio overlap
    n_runs: int = _ESTIMATOR["n_runs"]  # k-means seeds merged (overlap by several runs)
    min_size: int = _ESTIMATOR["min_size"]
    max_size: int | None = _ESTIMATOR["max_size"]  # None: unbounded
    small: str = _ESTIMATOR["small"]  # groups below min_size: "merge" or "drop"
    min_confusion: float = _ESTIMATOR["min_confusion"]  # classes less confused stay with the generalist alone
    random_state: int = _ESTIMATOR["random_state"]

    def checks(self) -> list[tuple[bool, str]]:
        problems = []
        if self.predictions and (self.generalist or self.data):
            problems.append(
                "predictions (--predictions) replaces generalist and data (--generalist, --data): give one or the "
                "other, not both"
            )
        elif not self.predictions and not (self.generalist and self.data):
            missing = " and ".join(f"{k} (--{k})" for k in ("generalist", "data") if not getattr(self, k))
            problems.append(f"missing {missing}; or give predictions (--predictions), a model's predictions file")
        try:  # the clusterer's own constraints, before any data is read
            self.clusterer().check_params()
        except ValueError as e:
            problems.append(str(e))
        return [*super().checks(), *((False, msg) for msg in problems)]

    def clusterer(self) -> ConfusionClusterer:
        """The estimator, with this config's parameters; ``n_groups = 0``, how configs and
        ``--groups`` said "auto" before it had a name, still means it."""
        params = {k: getattr(self, k) for k in ESTIMATOR_FIELDS}
        if params["n_groups"] == 0 and not isinstance(params["n_groups"], bool):
            params["n_groups"] = "auto"
        return ConfusionClusterer(**params)


@dataclass
class _Transfer:
    """What groups are made from: Σ's accumulator over the transfer set, its labels and top-1
    predictions (n,), the class names, a known grouping, the regime check given the error capture,
    whose soft predictions they are (for messages), and the fingerprints clusters.json records."""

    acc: CovarianceAccumulator
    y_true: np.ndarray
    y_pred: np.ndarray
    classes: Sequence[str]
    known_groups: np.ndarray | None
    regime: Callable[[float | None], RegimeCheck]
    whose: str
    advice: str
    generalist_fingerprint: str | None = None
    predictions_fingerprint: str | None = None
    predictions: PredictionsSource | None = None  # what report.json says of a predictions file


@torch.no_grad()
def cluster(cfg: ClusterConfig, progress: bool = True) -> ClusterReport:
    """Σ of the soft predictions, of the generalist streamed over the transfer set or of the
    predictions file ``cfg.predictions``; groups fitted on it; artifacts written. The config is
    read here, once; the helpers below take the values they use."""
    estimator, temperature, top_k = cfg.clusterer(), cfg.temperature, cfg.top_k or None
    if cfg.predictions:
        t = _from_predictions(cfg.predictions, cfg.out, estimator, temperature, top_k)
    else:
        t = _from_generalist(
            cfg.generalist,
            cfg.data,
            cfg.out,
            estimator,
            split=cfg.split,
            batch_size=cfg.batch_size,
            temperature=temperature,
            top_k=top_k,
            device=resolve_device(cfg.device),
            trust_code=cfg.trust_code,
            progress=progress,
        )
    cov = t.acc.covariance()
    _check_confusion(cov, temperature, t.whose, t.advice)
    clusterer = _fit_groups(estimator, cov, t.y_true, t.y_pred, len(t.classes))
    report = ClusterReport(
        clusterer.groups_,
        t.classes,
        clusterer.covariance_,
        t.y_true,
        t.y_pred,
        t.known_groups,
        clusterer.labels_,
        transfer_samples=t.acc.count,
        dropped_mass=t.acc.dropped_mass / t.acc.count,
        predictions=t.predictions,
        n_groups_search=_search(estimator, clusterer),
    )
    capture = report.error_capture()
    captured = capture["captured"] if capture and capture["errors"] else None  # no errors: nothing to capture
    report.regime = t.regime(captured)

    def write(tmp: Path) -> None:
        save_clusters(
            tmp / "clusters.json",
            clusterer.groups_,
            t.classes,
            t.generalist_fingerprint,
            config_to_json(cfg),
            predictions_fingerprint=t.predictions_fingerprint,
        )
        report.save_json(tmp / "report.json")
        report.save_plots(tmp)

    publish_dir(cfg.out, write, own=CLUSTER_FILES, what=WHAT, record="clusters.json")
    return report


def cluster_predictions(predictions: str | Path, out: str | Path, progress: bool = False, **fields) -> ClusterReport:
    """``specens cluster --predictions``: groups, report and plots in ``out`` from any model's
    predictions on a labelled transfer set (the ``.npz`` layout of :mod:`.predictions`);
    ``fields`` are :class:`ClusterConfig`'s (``n_groups``, ``temperature``, the estimator's)."""
    return cluster(ClusterConfig(predictions=str(predictions), out=str(out), **fields), progress)


def _from_generalist(
    run_dir: str,
    data: str,
    out: str,
    estimator: ConfusionClusterer,
    *,
    split: str,
    batch_size: int,
    temperature: float,
    top_k: int | None,
    device: torch.device,
    trust_code: bool,
    progress: bool,
) -> _Transfer:
    """One pass of the generalist in ``run_dir`` over ``split`` of ``data`` (:func:`_transfer_pass`),
    after every check."""
    check_outside_inputs(out, "--out", data=data, generalist=run_dir)
    check_target(out, CLUSTER_FILES, WHAT, "clusters.json")  # before the pass over the data
    g = load_generalist(run_dir, device, trust_code)
    info = load_info(data)
    g.check_fits(info, run_dir, f"{data}/{INFO_FILE}")
    info.split(split)
    _check_label_space(estimator, top_k, info.n_classes, data)
    batches = iter_split(data, split, batch_size, info=info)
    acc, y_true, y_pred = _transfer_pass(g, batches, split, temperature, top_k, device, progress)
    return _Transfer(
        acc,
        y_true,
        y_pred,
        info.classes,
        info.group_labels(),
        lambda captured: regime_check(g.record.metrics, captured, examples_per_class(info)),
        "the generalist's",
        "check its training (specens generalist eval)",
        generalist_fingerprint=g.fingerprint,
    )


def _from_predictions(
    predictions: str, out: str, estimator: ConfusionClusterer, temperature: float, top_k: int | None
) -> _Transfer:
    """The soft predictions of a checked predictions file (:mod:`.predictions`) at ``temperature``;
    no generalist, so no regime check (it reads a generalist's training record)."""
    check_outside_inputs(out, "--out", predictions=predictions)
    check_target(out, CLUSTER_FILES, WHAT, "clusters.json")
    p = load_predictions(predictions)
    _check_label_space(estimator, top_k, p.n_classes, predictions)
    acc = prediction_covariance([p.soft(temperature)], p.n_classes, top_k=top_k)

    def regime(captured: float | None) -> RegimeCheck:
        return RegimeCheck(
            likely=None,
            reason="the groups come from a predictions file, and the check reads a generalist's training record",
            advice="the error capture above bounds what specialists could fix",
            train_top1=None,
            val_top1=None,
            still_improving=None,
            error_capture=captured,
            examples_per_class=None,
        )

    return _Transfer(
        acc,
        p.labels,
        p.top1(),
        p.classes,
        None,
        regime,
        f"the model's (in {predictions})",
        "check that the file holds the model's outputs on a held-out set",
        predictions_fingerprint=p.fingerprint,
        predictions=PredictionsSource(file=predictions, fingerprint=p.fingerprint, given=p.kind),
    )


def _check_label_space(estimator: ConfusionClusterer, top_k: int | None, n_classes: int, where: str) -> None:
    """The estimator's ``n_groups`` and ``top_k`` against the ``n_classes`` of the transfer set
    ``where``, before the pass over it."""
    try:
        estimator.check_params(n_classes, where)
    except ValueError as e:
        raise ConfigError(str(e)) from None
    if top_k and top_k > n_classes:
        raise ConfigError(f"top_k must be at most the {n_classes} classes of {where}, got {top_k}")


def _transfer_pass(g, batches, split: str, temperature: float, top_k: int | None, device, progress: bool):
    """One pass over the transfer split's ``batches``: Σ of the generalist's soft predictions at
    ``temperature`` (docs/method.md §3), and the labels and top-1 predictions for the report.
    Returns (accumulator, y_true, y_pred)."""
    acc = CovarianceAccumulator(g.n_classes, top_k=top_k)
    y_true, y_pred = [], []
    for batch in progress_bar(batches, desc=f"covariance {split}", unit="batch", enabled=progress):
        logits = g.model(batch.inputs.to(device)).float().cpu()
        acc.update(soft_predictions(logits, temperature))
        y_true.append(batch.labels.numpy())
        y_pred.append(logits.argmax(1).numpy())
    return acc, np.concatenate(y_true), np.concatenate(y_pred)


def _check_confusion(
    cov,
    temperature: float,
    whose: str = "the generalist's",
    advice: str = "check its training (specens generalist eval)",
) -> None:
    """Refuse a covariance in which no two classes vary together: at an extreme temperature the
    soft predictions are one-hot (every off-diagonal entry <= 0) or uniform (all 0), and k-means
    would then blame the number of groups for what the temperature did. ``whose`` and ``advice``
    name the model in the message."""
    c = np.asarray(cov, dtype=np.float64)
    off = c[~np.eye(len(c), dtype=bool)]
    if not np.isfinite(c).all() or not (off > 1e-12 * max(float(np.abs(np.diag(c)).max()), 1e-300)).any():
        hint = (
            "" if temperature == DEFAULT_TEMPERATURE else f"; or T is extreme (try the default {DEFAULT_TEMPERATURE:g})"
        )
        raise ConfigError(
            f"{whose} soft predictions at temperature {temperature:g} carry no confusion between "
            "classes (no two vary together): it predicts every example with certainty, or the same for all"
            f"{hint}; {advice}"
        )


def _fit_groups(estimator: ConfusionClusterer, cov, y_true, y_pred, n_classes: int) -> ConfusionClusterer:
    """``estimator`` fitted on Σ, its K given or chosen from the labelled examples' errors
    (:func:`_search`). Groups no specialist could own are refused."""
    labelled = y_true >= 0
    try:
        clusterer = estimator.fit_covariance(cov, y_true[labelled], y_pred[labelled])
    except ValueError as e:  # parameters that do not fit this label space, e.g. n_groups > C
        raise ConfigError(str(e)) from None
    if any(len(grp) == n_classes for grp in clusterer.groups_):
        raise ConfigError(
            f"a group holds all {n_classes} classes (n_groups={clusterer.n_groups_}): its "
            "specialist would have no classes outside it; use more groups"
        )
    if not len(clusterer.groups_):
        raise ConfigError(
            f"no group of at least min_size={estimator.min_size} classes came out of {clusterer.n_groups_} "
            f"k-means groups over {n_classes} classes; use fewer groups or a smaller min_size"
        )
    return clusterer


def _search(estimator: ConfusionClusterer, clusterer: ConfusionClusterer) -> GroupsSearch | None:
    """How the fitted ``clusterer`` chose K, for the report; None where K was given."""
    if estimator.n_groups != "auto":
        return None
    tried = [SearchRow(**row) for row in clusterer.n_groups_search_]
    return GroupsSearch(chosen=clusterer.n_groups_, min_capture=estimator.min_capture, tried=tried)


@dataclass(frozen=True, kw_only=True)
class ClustersRecord(Record):
    """``clusters.json``: the groups (class indices, and their names for a reader), what they were
    made from (a generalist's fingerprint, or None and a predictions file's), the class count and
    the config. :meth:`from_json` checks every key and type, naming the file and the key; each
    group's classes are checked by :func:`load_clusters`."""

    ARTIFACT = (FORMAT, FORMAT_VERSION)
    generalist_fingerprint: str | None  # None: made from a predictions file
    predictions_fingerprint: str | None = None  # the predictions file's, where one was used
    n_classes: int = param(ge=2)
    groups: list[list[int]]
    group_names: list[list[str]] = field(default_factory=list)
    config: dict[str, Any] = field(default_factory=dict)

    def checks(self) -> list[tuple[bool, str]]:
        made_from = self.generalist_fingerprint is not None or self.predictions_fingerprint is not None
        return [
            (made_from, "'generalist_fingerprint' must be a string, got None"),
            (all(isinstance(g, list) for g in self.groups), "'groups' must be a list of lists of class indices"),
        ]

    @property
    def from_predictions(self) -> bool:
        return self.generalist_fingerprint is None


def save_clusters(
    path: str | Path,
    groups: list[np.ndarray],
    classes,
    generalist_fingerprint: str | None,
    config: dict[str, Any],
    *,
    predictions_fingerprint: str | None = None,
) -> None:
    """Write ``clusters.json`` (:class:`ClustersRecord`): made from a generalist (its fingerprint),
    or from a predictions file (``generalist_fingerprint`` None, ``predictions_fingerprint`` the file's)."""
    record = ClustersRecord(
        generalist_fingerprint=generalist_fingerprint,
        predictions_fingerprint=predictions_fingerprint,
        n_classes=len(classes),
        groups=[[int(c) for c in g] for g in groups],
        group_names=[[classes[c] for c in g] for g in groups],
        config=config,
    )
    write_json_atomic(path, record.to_json())


@dataclass(frozen=True)
class Clusters:
    groups: tuple[np.ndarray, ...]
    n_classes: int
    generalist_fingerprint: str | None  # None: made from a predictions file
    fingerprint: str  # of clusters.json itself, for specialists to record
    config: dict
    predictions_fingerprint: str | None = None  # of the predictions file it was made from


def load_clusters(
    path: str | Path, generalist_fingerprint: str | None = None, n_classes: int | None = None
) -> Clusters:
    """Read and check ``clusters.json`` (:class:`ClustersRecord`); with ``generalist_fingerprint``,
    refuse groups made from another generalist, or from a predictions file. Every group must be
    non-empty, sorted-unique, and within [0, n_classes)."""
    path = Path(path)
    r = ClustersRecord.from_json(read_artifact_json(path, FORMAT, FORMAT_VERSION), str(path))
    if generalist_fingerprint is not None and r.from_predictions:
        raise CheckpointError(
            f"{path}: made from a predictions file (`specens cluster --predictions`), not from a generalist; "
            "specialists need groups made from their generalist (`specens cluster --generalist ... --data ...`)"
        )
    if generalist_fingerprint is not None and r.generalist_fingerprint != generalist_fingerprint:
        raise CheckpointError(
            f"{path}: made from generalist {r.generalist_fingerprint}, but the generalist given is "
            f"{generalist_fingerprint}"
        )
    if n_classes is not None and r.n_classes != n_classes:
        raise CheckpointError(f"{path}: made for {r.n_classes} classes, the generalist has {n_classes}")
    groups = [_checked_group(g, i, r.n_classes, path) for i, g in enumerate(r.groups)]
    if not groups:
        raise CheckpointError(f"{path}: holds no groups")
    return Clusters(
        tuple(groups), r.n_classes, r.generalist_fingerprint, fingerprint(path), r.config, r.predictions_fingerprint
    )


def _checked_group(g: list, i: int, n_classes: int, path: Path) -> np.ndarray:
    """Group ``i`` as sorted int64 class indices: non-empty, ints in [0, n_classes), no repeats."""
    if not g:
        raise CheckpointError(f"{path}: group {i} is empty")
    odd = [x for x in g if not isinstance(x, int) or isinstance(x, bool)]
    if odd:
        raise CheckpointError(f"{path}: group {i} holds {json.dumps(odd[0])}, not a class index (an int)")
    if not all(0 <= x < n_classes for x in g):
        raise CheckpointError(f"{path}: group {i} has classes outside [0, {n_classes})")
    if len(set(g)) != len(g):
        raise CheckpointError(f"{path}: group {i} repeats a class")
    return np.array(sorted(g), dtype=np.int64)
