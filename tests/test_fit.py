"""The specialists' fit report (specialists/fit.py) against a brute-force count, its verdicts, and
its place in the record, the training summary and the evaluation."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from specens.core.errors import CheckpointError
from specens.specialists.fit import FitReport, GroupScores, fit_report, summarise, verdict
from specens.specialists.model import apply_correction
from specens.specialists.record import read_specialist, specialist_dir


class _Batch:
    def __init__(self, x, y):
        self.inputs, self.labels = x, y


def _batches(x: torch.Tensor, y: torch.Tensor, size: int = 5) -> list[_Batch]:
    return [_Batch(x[i : i + size], y[i : i + size]) for i in range(0, len(y), size)]


def _brute(gen, spec, x, y, group, correction):
    """Per example, in float64 with plain Python: within-group right / NLL, and dustbin counts."""
    g_right = s_right = 0
    g_nll = s_nll = 0.0
    for xi, yi in zip(x, y, strict=True):
        zg = gen(xi[None])[0].double().numpy()[group]
        zs = spec(xi[None])[0].double().numpy()[:-1]
        pos = group.index(int(yi))
        for z, which in ((zg, "g"), (zs, "s")):
            log_p = z[pos] - (np.log(np.sum(np.exp(z - z.max()))) + z.max())
            right = int(np.argmax(z) == pos)
            if which == "g":
                g_right, g_nll = g_right + right, g_nll - log_p
            else:
                s_right, s_nll = s_right + right, s_nll - log_p
    n = len(y)
    return g_right / n, s_right / n, g_nll / n, s_nll / n


def test_fit_report_equals_a_brute_force_count():
    torch.manual_seed(0)
    n_classes, group = 7, [1, 4, 5]
    gen, spec = nn.Linear(6, n_classes), nn.Linear(6, len(group) + 1)
    x_in, x_val, x_out = torch.randn(23, 6), torch.randn(11, 6), torch.randn(17, 6)
    y_in = torch.tensor(group)[torch.randint(0, 3, (23,))]
    y_val = torch.tensor(group)[torch.randint(0, 3, (11,))]
    y_out = torch.tensor([0, 2, 3, 6])[torch.randint(0, 4, (17,))]
    correction = 0.7
    report = fit_report(
        gen,
        spec,
        torch.tensor(group),
        correction,
        _batches(x_in, y_in),
        _batches(x_val, y_val),
        _batches(x_out, y_out),
        torch.device("cpu"),
        sample=20,  # cuts the training sample at 20 of 23, inside a batch
    )
    with torch.no_grad():
        expected_train = _brute(gen, spec, x_in[:20], y_in[:20], group, correction)
        expected_val = _brute(gen, spec, x_val, y_val, group, correction)
        binned = sum(int(apply_correction(spec(x[None]), correction)[0].argmax() == 3) for x in x_out)
    for scores, expected, n in ((report.train, expected_train, 20), (report.val, expected_val, 11)):
        assert scores.n == n
        got = (scores.generalist_top1, scores.specialist_top1, scores.generalist_nll, scores.specialist_nll)
        assert got == pytest.approx(expected, rel=1e-6)
    assert report.outside == 17
    assert report.dustbin_rate == pytest.approx(binned / 17)


def _scores(gen: float, spec: float, n: int = 100) -> GroupScores:
    return GroupScores(n=n, generalist_top1=gen, specialist_top1=spec, generalist_nll=1.0, specialist_nll=1.0)


@pytest.mark.parametrize(
    ("train", "val", "expected"),
    [
        (_scores(0.99, 0.99), _scores(0.6, 0.6), "nothing to learn"),
        # the generalist fits the training examples: validation decides, beyond a count's noise (2 sqrt(errors))
        (_scores(0.998, 1.0, 2000), _scores(0.974, 0.989, 1000), "learning"),  # 26 -> 11 errors: 15 > 10.2
        (_scores(0.998, 1.0, 2000), _scores(0.92, 0.93, 1000), "nothing to learn"),  # 80 -> 70: 10 < 17.9
        (_scores(0.999, 1.0), _scores(0.80, 0.90, 10), "nothing to learn"),  # 2 -> 1: half, but one example
        (_scores(0.999, 1.0), _scores(0.98, 0.99, 100), "nothing to learn"),  # no error left to speak of
        (_scores(0.999, 0.5), _scores(0.9, 0.95, 1000), "damaged"),  # damage is judged first
        (_scores(1.0, 0.97), None, "damaged"),  # no generalist error to compare with: 3 errors > 2
        (_scores(0.99, 0.98), _scores(0.9, 0.9), "nothing to learn"),  # 1 -> 2 errors: noise, not damage
        (_scores(0.997, 0.9945, 2000), _scores(0.93, 0.93), "nothing to learn"),  # 6 -> 11 errors, still 99%
        (_scores(0.80, 0.68, 50), _scores(0.6, 0.6), "under-trained"),  # 10 -> 16 errors: 6 < 2 sqrt(10)
        (_scores(0.62, 0.63), _scores(0.55, 0.56), "under-trained"),  # 2.6% of the training errors removed
        (_scores(0.863, 0.116), _scores(0.68, 0.11), "damaged"),  # the demo's specialist 9 at lr 1e-2
        (_scores(0.80, 0.70), _scores(0.6, 0.6), "damaged"),  # exactly half as many errors again
        (_scores(0.80, 0.71), _scores(0.6, 0.6), "under-trained"),
        (_scores(0.62, 0.80), _scores(0.55, 0.55), "over-fitting"),
        (_scores(0.62, 0.80), _scores(0.55, 0.50), "over-fitting"),
        (_scores(0.62, 0.72), _scores(0.55, 0.60), "learning"),
        (_scores(0.62, 0.72), None, "learning"),
    ],
)
def test_verdicts(train, val, expected):
    assert verdict(train, val) == expected


def test_error_cut():
    assert _scores(0.6, 0.8).error_cut == pytest.approx(0.5)
    assert _scores(0.6, 0.5).error_cut == pytest.approx(-0.25)
    assert _scores(1.0, 0.9).error_cut == 0.0


def test_record_round_trip_and_refusals():
    report = FitReport(train=_scores(0.6, 0.8), val=None, outside=10, dustbin_rate=0.9, verdict="learning")
    assert FitReport.from_json(report.to_json(), "s.json: 'fit'") == report
    bad = {**report.to_json(), "verdict": "great"}
    with pytest.raises(CheckpointError, match=r"s.json: 'fit'.verdict must be one of"):
        FitReport.from_json(bad, "s.json: 'fit'")
    bad = {**report.to_json(), "train": {**report.train.to_json(), "specialist_top1": math.nan}}
    with pytest.raises(CheckpointError, match=r"'fit'.train.specialist_top1 must be a finite number"):
        FitReport.from_json(bad, "s.json: 'fit'")


def test_summary_pools_the_specialists():
    fits = {
        0: FitReport(train=_scores(0.5, 0.7, 100), val=_scores(0.4, 0.5, 10), outside=5, dustbin_rate=1.0, verdict="x"),
        1: FitReport(train=_scores(0.8, 0.8, 300), val=None, outside=5, dustbin_rate=1.0, verdict="y"),
    }
    line = summarise(fits)
    assert "training 0.725 -> 0.775" in line  # (50 + 240) / 400 and (70 + 240) / 400
    assert "validation 0.400 -> 0.500" in line


def test_trained_specialists_carry_their_fit_report(ensemble_run):
    """Each trained specialist's record holds a report on its own group's examples, and the
    evaluation prints the run's summary."""
    from specens.inference.ensemble import Ensemble
    from specens.inference.evaluate import evaluate_ensemble, format_report

    records = [read_specialist(specialist_dir(ensemble_run["root"], m)) for m in range(4)]
    for r in records:
        assert r.fit.train.n > 0 and r.fit.val is not None and r.fit.val.n > 0
        assert r.fit.outside > 0
        assert 0 <= r.fit.dustbin_rate <= 1
    ens = Ensemble.load(ensemble_run["root"], all_specialists=True)
    report = evaluate_ensemble(ens, ensemble_run["data"], "val", progress=False)
    assert report.fit == tuple(r.fit for r in records)
    assert "fit of 4 specialists:" in format_report(report)
