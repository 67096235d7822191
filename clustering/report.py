"""The clustering-analysis API: is a set of groups worth training specialists for?

:class:`ClusterReport` gathers, from the groups, the class names and (where available) the
covariance, the generalist's labelled predictions and a known grouping:

- each group's classes by name, its size and confusability (:func:`group_confusability`);
- coverage: how many classes lie in 0, 1, 2, … groups;
- error capture: the share of the generalist's top-1 errors whose true and predicted classes lie in
  a common group (errors a specialist could fix), overall and per group;
- agreement with a known grouping (adjusted Rand index, NMI, purity);
- plots (covariance reordered by group; group sizes), a text table, and ``report.json``
  (:class:`ReportRecord`, read back by :func:`read_cluster_report`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

from specens.core.config import param
from specens.core.errors import CheckpointError
from specens.core.io import atomic_path, read_artifact_json, read_json
from specens.core.records import HEADER, Record

from .groups import choose_n_groups, error_capture, group_confusability, n_groups_candidates

__all__ = ["ClusterReport", "agreement", "choose_n_groups", "error_capture", "n_groups_candidates"]


def agreement(labels: np.ndarray, known: np.ndarray) -> dict:
    """ARI, NMI and purity of a class partition against a known one; classes in no group
    (label −1) count as singletons. Both arrays are (n_classes,) ints."""
    labels = np.array(labels)
    free = labels < 0
    labels[free] = labels.max(initial=0) + 1 + np.arange(free.sum())
    purity = sum(np.bincount(known[labels == g]).max() for g in np.unique(labels)) / len(labels)
    return {
        "ari": float(adjusted_rand_score(known, labels)),
        "nmi": float(normalized_mutual_info_score(known, labels)),
        "purity": float(purity),
    }


REPORT_FORMAT, REPORT_VERSION = "specens.cluster-report", 1  # report.json's header


@dataclass(frozen=True, kw_only=True)
class ErrorCapture(Record):
    """``report.json``'s ``error_capture`` (:func:`~.groups.error_capture`): the model's top-1
    errors on the labelled transfer examples, the share whose two classes share a group, and the
    share each group captures."""

    errors: int = param(ge=0)
    captured: float = param(ge=0, le=1)
    per_group: list[float]


@dataclass(frozen=True, kw_only=True)
class Agreement(Record):
    """``report.json``'s ``agreement`` with a known grouping (:func:`agreement`)."""

    ari: float
    nmi: float
    purity: float


@dataclass(frozen=True, kw_only=True)
class GroupRow(Record):
    """One group of ``report.json``'s ``groups``: its size, confusability and share of the errors
    (None without a covariance or labelled errors), and its classes by name."""

    group: int = param(ge=0)
    size: int = param(ge=0)
    confusability: float | None
    error_capture: float | None
    classes: list[str]


@dataclass(frozen=True, kw_only=True)
class SearchRow(Record):
    """One K tried by :func:`~.groups.choose_n_groups`: the groups made and the share of errors captured."""

    k: int
    groups: int
    captured: float


@dataclass(frozen=True, kw_only=True)
class GroupsSearch(Record):
    """``report.json``'s ``n_groups_search`` (``n_groups = "auto"``): the K chosen, the capture it
    had to keep, and every K tried (none without labelled errors)."""

    chosen: int
    min_capture: float
    tried: list[SearchRow]


@dataclass(frozen=True, kw_only=True)
class PredictionsSource(Record):
    """``report.json``'s ``predictions``: the predictions file the groups came from (``specens
    cluster --predictions``), its fingerprint and what it held (logits or probabilities)."""

    file: str
    fingerprint: str
    given: str


@dataclass(frozen=True)
class RegimeCheck(Record):
    """The regime check (:func:`~.regime.regime_check`): the prediction (None when the generalist
    carries no training record, or there is no generalist: groups from a predictions file), its
    reason, what to do instead, and the measurements it rests on. In ``report.json``, its
    :meth:`line` comes first (derived, so not read back)."""

    likely: bool | None
    reason: str
    advice: str
    train_top1: float | None
    val_top1: float | None
    still_improving: bool | None
    error_capture: float | None
    examples_per_class: float | None  # None: no training set known (groups from a predictions file)

    def line(self) -> str:
        verdict = {True: "likely to pay", False: "unlikely to pay", None: "unknown"}[self.likely]
        return f"regime check: specialists {verdict}: {self.reason}; {self.advice}"

    def to_json(self) -> dict:
        return {"line": self.line(), **super().to_json()}

    @classmethod
    def from_json(cls, data: Any, where: str) -> RegimeCheck:
        if isinstance(data, dict):
            data = {k: v for k, v in data.items() if k != "line"}
        return super().from_json(data, where)


@dataclass(frozen=True, kw_only=True)
class ReportRecord(Record):
    """``report.json``: :class:`ClusterReport`'s figures; a ``specens cluster`` run adds the
    transfer set's size, the probability mass a top-k covariance dropped, the predictions file
    (groups from one), the choice of K (``n_groups = "auto"``) and the regime check."""

    ARTIFACT = (REPORT_FORMAT, REPORT_VERSION)
    n_classes: int = param(ge=1)
    n_groups: int = param(ge=0)
    coverage: dict[str, int]  # {number of groups holding a class: number of such classes}
    error_capture: ErrorCapture | None  # None: no labelled predictions
    agreement: Agreement | None  # None: no known grouping
    groups: list[GroupRow]
    transfer_samples: int | None = param(None, ge=0)
    dropped_mass: float | None = param(None, ge=0)  # per example
    predictions: PredictionsSource | None = None
    n_groups_search: GroupsSearch | None = None
    regime: RegimeCheck | None = None


def read_cluster_report(path: str | Path) -> ReportRecord:
    """The clustering's ``report.json`` at ``path`` (:class:`ReportRecord`), its header checked. A
    report without a header, as every ``specens cluster`` wrote one before version 1, holds the
    same body and is read as one."""
    data = read_json(path)
    if not isinstance(data, dict) or set(HEADER) & set(data):  # a header, or none of ours: check it
        data = read_artifact_json(path, REPORT_FORMAT, REPORT_VERSION)
    return ReportRecord.from_json(data, str(path))


def read_error_capture(path: str | Path) -> float | None:
    """The share of the model's errors the groups capture, as the clustering's ``report.json`` at
    ``path`` records it (:func:`read_cluster_report`); None where the file is absent, not such a
    report (another format or version, edited, someone else's) or made without labelled errors:
    the regime check then goes without it."""
    if not Path(path).is_file():
        return None
    try:
        report = read_cluster_report(path)
    except CheckpointError:
        return None
    return None if report.error_capture is None else report.error_capture.captured


@dataclass
class ClusterReport:
    """What a user weighs before training specialists for ``groups``.

    groups: list of sorted class-index arrays; classes: the class names (length C).
    covariance: (C, C), for confusability and the picture. y_true / y_pred: the generalist's
    labelled top-1 predictions (n,), for error capture. known_groups: (C,) known group per class.
    transfer_samples, dropped_mass, predictions, n_groups_search, regime: what a ``specens
    cluster`` run adds to ``report.json`` (:class:`ReportRecord`), None elsewhere.
    """

    groups: list[np.ndarray]
    classes: Sequence[str]
    covariance: np.ndarray | None = None
    y_true: np.ndarray | None = None
    y_pred: np.ndarray | None = None
    known_groups: np.ndarray | None = None
    labels: np.ndarray | None = None  # primary group per class (−1: none); derived from groups if None
    transfer_samples: int | None = None
    dropped_mass: float | None = None
    predictions: PredictionsSource | None = None
    n_groups_search: GroupsSearch | None = None
    regime: RegimeCheck | None = None

    def __post_init__(self):
        c = len(self.classes)
        if self.labels is None:
            self.labels = np.full(c, -1, dtype=np.int64)
            for g in reversed(range(len(self.groups))):
                self.labels[self.groups[g]] = g

    @property
    def n_classes(self) -> int:
        return len(self.classes)

    def coverage(self) -> dict[int, int]:
        """{number of groups holding a class: number of such classes}."""
        counts = np.zeros(self.n_classes, dtype=np.int64)
        for g in self.groups:
            counts[g] += 1
        return {int(k): int(v) for k, v in zip(*np.unique(counts, return_counts=True), strict=True)}

    def error_capture(self) -> dict | None:
        if self.y_true is None or self.y_pred is None:
            return None
        return error_capture(self.groups, self.y_true, self.y_pred, self.n_classes)

    def agreement(self) -> dict | None:
        return None if self.known_groups is None else agreement(self.labels, self.known_groups)

    def group_rows(self) -> list[dict]:
        capture = self.error_capture()
        rows = []
        for i, g in enumerate(self.groups):
            rows.append(
                {
                    "group": i,
                    "size": len(g),
                    "confusability": None if self.covariance is None else group_confusability(self.covariance, g),
                    "error_capture": None if capture is None else capture["per_group"][i],
                    "classes": [self.classes[c] for c in g],
                }
            )
        return rows

    def record(self) -> ReportRecord:
        """What ``report.json`` holds."""
        capture, agreement = self.error_capture(), self.agreement()
        return ReportRecord(
            n_classes=self.n_classes,
            n_groups=len(self.groups),
            coverage={str(k): v for k, v in self.coverage().items()},
            error_capture=None if capture is None else ErrorCapture(**capture),
            agreement=None if agreement is None else Agreement(**agreement),
            groups=[GroupRow(**r) for r in self.group_rows()],
            transfer_samples=self.transfer_samples,
            dropped_mass=self.dropped_mass,
            predictions=self.predictions,
            n_groups_search=self.n_groups_search,
            regime=self.regime,
        )

    def to_json(self) -> dict:
        return self.record().to_json()

    def save_json(self, path: str | Path) -> None:
        from specens.core.io import write_json_atomic

        write_json_atomic(path, self.to_json())

    def summary(self) -> str:
        """The totals: groups, coverage, error capture, agreement with the known grouping."""
        lines = [
            f"{len(self.groups)} groups over {self.n_classes} classes; classes by number of groups "
            "holding them: " + ", ".join(f"{k}: {v}" for k, v in self.coverage().items())
        ]
        cap = self.error_capture()
        if cap:
            model = "model" if self.predictions is not None else "generalist"  # a predictions file: any model's
            lines.append(
                f"error capture: {cap['captured']:.1%} of the {model}'s {cap['errors']} top-1 errors "
                "fall inside a group"
            )
        search = self.n_groups_search
        if search is not None and search.tried:
            lines.append(
                f"K = {search.chosen} chosen: the most groups still capturing >= {search.min_capture:.0%} "
                "of the errors (K: capture " + ", ".join(f"{r.k}: {r.captured:.0%}" for r in search.tried) + ")"
            )
        agr = self.agreement()
        if agr:
            lines.append(
                f"agreement with the known grouping: ARI {agr['ari']:.3f}, NMI {agr['nmi']:.3f}, "
                f"purity {agr['purity']:.3f}"
            )
        if self.regime is not None:
            lines.append(self.regime.line())
        return "\n".join(lines)

    def table(self, max_names: int = 8) -> str:
        """A readable summary: :meth:`summary`, then one line per group."""
        lines = [self.summary()]
        lines.append(f"{'group':>5} {'size':>5} {'confus.':>7} {'errors':>7}  classes")
        for r in self.group_rows():
            conf = "" if r["confusability"] is None else f"{r['confusability']:.2f}"
            err = "" if r["error_capture"] is None else f"{r['error_capture']:.1%}"
            names = ", ".join(r["classes"][:max_names]) + (" …" if r["size"] > max_names else "")
            lines.append(f"{r['group']:>5} {r['size']:>5} {conf:>7} {err:>7}  {names}")
        return "\n".join(lines)

    def save_plots(self, out_dir: str | Path, max_pixels: int = 800) -> list[Path]:
        """Write ``covariance.png`` (correlation of the covariance, classes reordered by group, block-
        averaged down to at most ``max_pixels`` a side) and ``group_sizes.png``; returns the paths."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        paths = []
        if self.covariance is not None:
            order = np.argsort(np.where(self.labels < 0, len(self.groups), self.labels), kind="stable")
            d = np.sqrt(np.clip(np.diag(self.covariance), 1e-300, None))
            corr = (self.covariance / d[:, None] / d[None, :])[np.ix_(order, order)]
            step = max(1, -(-len(order) // max_pixels))
            if step > 1:  # block-average so that a 15,000-class matrix still draws
                n = len(order) // step * step
                corr = corr[:n, :n].reshape(n // step, step, n // step, step).mean((1, 3))
            fig, ax = plt.subplots(figsize=(7, 6))
            im = ax.imshow(corr, cmap="RdBu_r", vmin=-1, vmax=1, interpolation="nearest")
            ax.set_title(f"correlation of soft predictions, {self.n_classes} classes ordered by group")
            fig.colorbar(im, ax=ax, shrink=0.8)
            paths.append(out_dir / "covariance.png")
            with atomic_path(paths[-1]) as tmp:
                fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
            plt.close(fig)
        fig, ax = plt.subplots(figsize=(7, 3))
        ax.bar(range(len(self.groups)), [len(g) for g in self.groups], color="tab:blue")
        ax.set_xlabel("group")
        ax.set_ylabel("classes")
        ax.set_title("group sizes")
        paths.append(out_dir / "group_sizes.png")
        with atomic_path(paths[-1]) as tmp:
            fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
        plt.close(fig)
        return paths
