"""Before the specialists' compute is spent: will they likely pay, from what is already measured?

Specialists pay where the generalist under-fits a large, confusable label space for lack of
capacity (the paper's JFT regime, docs/method.md §7): its errors are ones it also makes on its training
data, in groups a specialist can own. They do not where the generalist fits its training set (its
errors are failures to generalise from the examples there are, and a specialist sees the same
examples), or where it was still improving (its own further training is the cheaper fix). The
rules, in order, on the generalist's best epoch and the clustering's error capture:

1. still improving (it ran every epoch and its best came in the last two): unlikely, train it
   further first;
2. fits its training set (training error below half its validation error): unlikely;
3. the groups capture under ``MIN_CAPTURE`` of its validation errors: unlikely (a specialist can
   fix only an error whose true and predicted classes share its group);
4. otherwise the generalist under-fits for lack of capacity, the paper's regime: specialists that
   learn their groups beat training it further and several generalists there, but a wider
   generalist at the ensemble's serving cost beat them on the one such setup measured (issue 43),
   so this is "unlikely" too, with the wider net as the alternative to try; specialists remain the
   option where the generalist cannot be made wider.

Calibrated on every dataset measured (``benchmarks/RESULTS.md``, "The regime check").
"""

from __future__ import annotations

from specens.generalist.checkpoint import GeneralistEpoch, GeneralistMetrics

from .report import RegimeCheck

FIT_RATIO = 0.5  # training error below this share of the validation error: the training set is fitted
MIN_CAPTURE = 0.3


def regime_check(
    metrics: GeneralistMetrics | None, error_capture: float | None, examples_per_class: float
) -> RegimeCheck:
    """The check of the module docstring, from the generalist's training record (``metrics``), the
    share of its errors on the transfer set the groups capture (None: not measured, or it made none),
    and the training examples per class. A record without both figures at its best epoch gives
    the verdict "unknown"."""
    seen = dict(error_capture=error_capture, examples_per_class=examples_per_class)
    best = _best_record(metrics)
    if best is None:
        return RegimeCheck(
            None,
            "the generalist carries no training and validation record",
            "compare with `specens baseline` after training",
            None,
            None,
            None,
            **seen,
        )
    train, val = best
    seen |= dict(train_top1=train, val_top1=val, still_improving=metrics.still_improving)
    measured = f"training top-1 {train:.3f}, validation {val:.3f}"
    if metrics.still_improving:
        return RegimeCheck(
            False,
            _still_improving(metrics, best),
            "train it further first (`specens baseline`'s (a) does, with the specialists' compute)",
            **seen,
        )
    if 1 - train < FIT_RATIO * (1 - val):
        return RegimeCheck(
            False,
            f"the generalist fits its training set ({measured}): its errors are on examples unlike those it "
            "trained on, and a specialist trains on the same ones",
            "more or more varied training data, or a second generalist, will likely buy more",
            **seen,
        )
    if error_capture is not None and error_capture < MIN_CAPTURE:
        return RegimeCheck(
            False,
            f"the groups capture only {error_capture:.0%} of the generalist's errors",
            "specialists can fix at most that share; try more groups or overlap",
            **seen,
        )
    capture = "" if error_capture is None else f", and the groups capture {error_capture:.0%} of its errors"
    return RegimeCheck(
        False,
        f"the generalist under-fits after converging ({measured}){capture}: specialists can beat training it "
        "further or a second generalist, but where measured a wider generalist at the same serving cost beat them",
        "try a wider generalist first (`specens baseline`'s (c)); specialists are the option where the "
        "generalist cannot be made wider",
        **seen,
    )


def examples_per_class(info) -> float:
    """Training examples per class of a :class:`~specens.data.format.DatasetInfo` (0 without a train split)."""
    return info.split("train").num_samples / info.n_classes if "train" in info.splits else 0.0


def _still_improving(metrics: GeneralistMetrics, best: tuple[float, float]) -> str:
    """Rule 1's reason: the last epoch's figures where it says "at its last epoch" (and the best
    epoch's validation top-1 when that came the epoch before); the best epoch's, named as such, where
    the last epoch's record lacks them."""
    n, b = len(metrics.history), metrics.best_epoch
    last = best if b == n else _figures(metrics.history[-1])
    if last is None:
        return (
            f"the generalist was still improving: its best epoch, {b} of {n}, came in the last two "
            f"(training top-1 {best[0]:.3f}, validation {best[1]:.3f})"
        )
    measured = f"training top-1 {last[0]:.3f}, validation {last[1]:.3f}"
    if b < n:
        measured += f"; its best validation top-1, {best[1]:.3f}, at epoch {b} of {n}"
    return f"the generalist was still improving at its last epoch ({measured})"


def _best_record(metrics: GeneralistMetrics | None) -> tuple[float, float] | None:
    """(training top-1, validation top-1) at the best epoch, or None where the record lacks them."""
    if metrics is None or not 1 <= metrics.best_epoch <= len(metrics.history):
        return None
    return _figures(metrics.history[metrics.best_epoch - 1])


def _figures(record: GeneralistEpoch) -> tuple[float, float] | None:
    """(training top-1, validation top-1) of one epoch's record, or None where it lacks them."""
    if record.train_top1 is None or record.val_top1 is None:
        return None
    return record.train_top1, record.val_top1
