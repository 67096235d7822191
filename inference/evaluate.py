"""The paper's evaluation of a specialist ensemble (docs/method.md §6; the paper's section 5.5 and Table 4).

:class:`EnsembleTally` is the arithmetic: it accumulates, batch by batch, what the report needs
from the generalist's p_g, the ensemble's q, the routing and the labels; :func:`evaluate_ensemble`
streams a labelled split through an :class:`~specens.inference.ensemble.Ensemble` into a tally;
``specens evaluate`` prints the report and saves it as JSON and a PNG.

Definitions:

- top-1 / top-5 of p_g (generalist alone) and of q (ensemble);
- conditional accuracy (docs/method.md §6): over the examples whose true class is in U, the union of the
  specialists' groups, with the arg-max taken over the classes of U only;
- Table 4: examples grouped by how many specialists' groups hold their true class (0, 1, …, 10+),
  with their count, the change in the number correct at top-1 (ensemble − generalist), and the
  relative improvement (that change / the generalist's number correct);
- routing misses: the true class is in some group, but no specialist whose group holds it was
  active, so the specialists could not have helped.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import numpy as np
import torch

from specens.core.cost import format_flops, forward_flops
from specens.core.io import atomic_path, publish_dir, write_json_atomic
from specens.core.progress import progress_bar
from specens.data.shards import iter_split
from specens.specialists.fit import summarise

from .ensemble import Ensemble
from .report import CoverageRow, EnsembleCost, EvaluationReport, InferenceCost, Routing, Scores, SpecialistsCost

MAX_BUCKET = 10  # Table 4's last row is "10 or more"


class EnsembleTally:
    """Running counts for the report. ``membership``: (M, C) bool, class c in group m."""

    def __init__(self, membership: torch.Tensor):
        self.membership = membership.cpu()
        self.union = self.membership.any(0)  # (C,) U
        self.n = 0
        self.correct = {
            "generalist": {"top1": 0, "top5": 0, "conditional": 0},
            "ensemble": {"top1": 0, "top5": 0, "conditional": 0},
        }
        self.nll = {"generalist": 0.0, "ensemble": 0.0}
        self.n_in_union = 0
        self.active_total = 0
        self.routed = 0  # examples with at least one active specialist
        self.covered = 0  # true class in U
        self.missed = 0  # covered, yet no specialist holding the true class active
        # per number of covering specialists: [count, generalist correct, ensemble correct]
        self.buckets = np.zeros((MAX_BUCKET + 1, 3), dtype=np.int64)

    def update(self, p_general: torch.Tensor, q: torch.Tensor, active: torch.Tensor, labels: torch.Tensor) -> None:
        """p_general, q: (B, C); active: (B, M) bool; labels: (B,) int64."""
        p_general, q, active, y = p_general.cpu().double(), q.cpu().double(), active.cpu(), labels.cpu()
        k = min(5, q.shape[1])
        in_u = self.union[y]
        n_cover = self.membership[:, y].sum(0)  # (B,)
        holds = self.membership[:, y].T  # (B, M): group m holds the true class
        hit1 = {}
        for name, p in (("generalist", p_general), ("ensemble", q)):
            top = p.topk(k, dim=1).indices
            hit1[name] = top[:, 0] == y
            self.correct[name]["top1"] += int(hit1[name].sum())
            self.correct[name]["top5"] += int((top == y[:, None]).any(1).sum())
            restricted = p.masked_fill(~self.union, -1.0).argmax(1)  # arg-max over U only
            self.correct[name]["conditional"] += int(((restricted == y) & in_u).sum())
            self.nll[name] -= float(torch.log(p.gather(1, y[:, None]).clamp_min(1e-30)).sum())
        self.n += len(y)
        self.n_in_union += int(in_u.sum())
        self.active_total += int(active.sum())
        self.routed += int(active.any(1).sum())
        self.covered += int((n_cover > 0).sum())
        self.missed += int(((n_cover > 0) & ~(active & holds).any(1)).sum())
        bucket = n_cover.clamp_max(MAX_BUCKET).numpy()
        np.add.at(self.buckets, (bucket, 0), 1)
        np.add.at(self.buckets, (bucket, 1), hit1["generalist"].numpy().astype(np.int64))
        np.add.at(self.buckets, (bucket, 2), hit1["ensemble"].numpy().astype(np.int64))

    def result(self) -> EvaluationReport:
        """The report's arithmetic; :func:`evaluate_ensemble` adds what it knows of the ensemble."""
        n = max(self.n, 1)
        scores = {
            name: Scores(
                top1=self.correct[name]["top1"] / n,
                top5=self.correct[name]["top5"] / n,
                nll=self.nll[name] / n,
                conditional=self.correct[name]["conditional"] / max(self.n_in_union, 1),
            )
            for name in ("generalist", "ensemble")
        }
        rows = tuple(
            CoverageRow(
                covering=f"{b}+" if b == MAX_BUCKET else str(b),
                count=count,
                generalist_correct=gen,
                ensemble_correct=ens,
                delta_correct=ens - gen,
                relative_improvement=(ens - gen) / gen if gen else math.nan,
            )
            for b, (count, gen, ens) in enumerate(self.buckets.tolist())
            if count
        )
        return EvaluationReport(
            n=self.n,
            generalist=scores["generalist"],
            ensemble=scores["ensemble"],
            n_in_union=self.n_in_union,
            mean_active_specialists=self.active_total / n,
            routed_fraction=self.routed / n,
            routing=Routing(self.covered, self.missed, self.missed / max(self.covered, 1)),
            table4=rows,
        )


@torch.no_grad()
def evaluate_ensemble(
    ens: Ensemble, data: str, split: str = "test", batch_size: int = 256, progress: bool = True
) -> EvaluationReport:
    """Stream ``data``'s labelled ``split`` through ``ens`` into its :class:`EvaluationReport`."""
    info = ens.dataset_info(data)
    tally = EnsembleTally(ens.membership)
    ens.seconds = dict.fromkeys(ens.seconds, 0.0)
    example = None
    bar = progress_bar(
        total=info.split(split).num_samples, unit="ex", unit_scale=True, desc=f"evaluate {split}", enabled=progress
    )
    for batch in iter_split(data, split, batch_size, info=info):
        res = ens.forward(batch.inputs)
        tally.update(res.p_general, res.q, res.active, batch.labels)
        example = batch.inputs[:8] if example is None else example
        bar.update(len(batch))
    bar.close()
    report = dataclasses.replace(
        tally.result(),
        dataset=info.name,
        split=split,
        n_specialists=len(ens.groups),
        top_n=ens.top_n,
        specialist_weight=ens.specialist_weight,
        fingerprints=ens.fingerprints,
        specialists_on=tuple(ens.indices),
        specialists_gated_off=tuple(ens.gated_off),
        fit=tuple(ens.fits),
    )
    if example is None:
        return report
    return dataclasses.replace(report, cost=cost_report(ens, report.mean_active_specialists, example))


def cost_report(ens: Ensemble, mean_active: float, example: torch.Tensor) -> EnsembleCost:
    """What the ensemble cost to train and costs per example to run (:mod:`specens.core.cost`):
    the generalist's training cost, every trained specialist's summed, and the inference passes,
    FLOPs and seconds (:class:`~specens.inference.report.InferenceCost`)."""
    x = example.to(ens.device)
    f_g = forward_flops(ens.generalist.model, x)
    f_s = ens.specialist_flops(x)
    sec = ens.seconds
    return EnsembleCost(
        generalist=ens.training_costs["generalist"],
        specialists=SpecialistsCost.total([c for c in ens.training_costs["specialists"] if c]),
        inference=InferenceCost(
            generalist_passes=1.0,
            specialist_passes=mean_active,
            flops_per_example={"generalist": f_g, "specialist": f_s},
            predicted_ratio=1 + mean_active * f_s / f_g if f_g else None,
            measured_ratio=sum(sec.values()) / sec["generalist"] if sec["generalist"] else None,
            seconds=dict(sec),
        ),
    )


def format_report(r: EvaluationReport) -> str:
    """The report as aligned plain-text tables."""
    g, e = r.generalist, r.ensemble
    off = r.specialists_gated_off
    gated = f" ({len(off)} more gated off on validation: {', '.join(map(str, off))})" if off else ""
    lines = [
        f"{r.dataset} {r.split}: {r.n} examples, {r.n_specialists} specialists on{gated}, top-{r.top_n} "
        f"routing, {r.mean_active_specialists:.2f} active on average",
        "",
        f"{'':<22}{'generalist':>12}{'ensemble':>12}{'relative':>10}",
        f"{'top-1 accuracy':<22}{g.top1:>12.4f}{e.top1:>12.4f}{_pct(r.top1_relative_improvement):>10}",
        f"{'top-5 accuracy':<22}{g.top5:>12.4f}{e.top5:>12.4f}",
        f"{'conditional accuracy':<22}{g.conditional:>12.4f}{e.conditional:>12.4f}"
        f"{_pct(r.conditional_relative_improvement):>10}",
        f"{'NLL':<22}{g.nll:>12.4f}{e.nll:>12.4f}",
        f"top-1 error cut by {_pct(r.top1_error_relative_cut)} (relative); routing missed "
        f"{r.routing.missed} of {r.routing.covered} covered examples ({r.routing.missed_fraction:.1%})",
        *_cost_lines(r.cost),
        *([summarise(dict(enumerate(r.fit)))] if r.fit else []),
        "",
        "Table 4: by number of specialists covering the true class",
        f"{'covering':>9}{'examples':>10}{'Δ correct':>11}{'relative':>10}",
    ]
    for row in r.table4:
        lines.append(f"{row.covering:>9}{row.count:>10}{row.delta_correct:>+11d}{_pct(row.relative_improvement):>10}")
    return "\n".join(lines)


def _cost_lines(cost: EnsembleCost | None) -> list[str]:
    if not cost:
        return []
    gen, spec, inf = cost.generalist, cost.specialists, cost.inference
    lines = []
    if gen:
        ratio = cost.specialists_over_generalist
        lines.append(
            f"training: generalist {format_flops(gen.train_flops)}, {gen.wall_seconds:.0f} s; "
            f"{spec.count} specialists {format_flops(spec.train_flops)}, {spec.wall_seconds:.0f} s "
            f"summed (training {spec.train_seconds:.0f} s, validation {spec.validation_seconds:.0f} s, "
            f"overhead {spec.overhead_seconds:.0f} s)"
            + (f"; specialists = {ratio:.2f} x the generalist's FLOPs" if ratio else "")
        )
    if inf.predicted_ratio and inf.measured_ratio:
        lines.append(
            f"inference per example: 1 generalist pass + {inf.specialist_passes:.2f} specialist passes; "
            f"{inf.predicted_ratio:.2f} x the generalist's FLOPs predicted, {inf.measured_ratio:.2f} x its "
            "time measured"
        )
    return lines


def _pct(x) -> str:
    """A relative change as ``+1.2%``; ``n/a`` where it is undefined (nothing to compare)."""
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else format(x, "+.1%")


def save_report(r: EvaluationReport, out: str | Path) -> None:
    """``evaluation.json`` and ``table4.png`` into ``out``, published together (an earlier report
    there is replaced only once the new one is complete; a folder of other files is refused)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    def write(tmp: Path) -> None:
        write_json_atomic(tmp / "evaluation.json", r.to_json())
        _plot_table4(r, tmp / "table4.png", plt)

    publish_dir(
        out, write, own=("evaluation.json", "table4.png"), what="a `specens evaluate` output", record="evaluation.json"
    )


def _plot_table4(r: EvaluationReport, path: Path, plt) -> None:
    rows = r.table4
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(9, 3.4))
    labels = [row.covering for row in rows]
    a1.bar(labels, [row.count for row in rows], color="#888")
    a1.set_xlabel("specialists covering the true class")
    a1.set_ylabel("test examples")
    rel = [0.0 if math.isnan(row.relative_improvement) else 100 * row.relative_improvement for row in rows]
    a2.bar(labels, rel, color=["#2a7" if v >= 0 else "#c33" for v in rel])
    a2.axhline(0, color="k", lw=0.8)
    a2.set_xlabel("specialists covering the true class")
    a2.set_ylabel("relative top-1 improvement (%)")
    g, e = r.generalist.top1, r.ensemble.top1
    fig.suptitle(f"{r.dataset}: top-1 {g:.3f} → {e:.3f} ({_pct(r.top1_relative_improvement)})")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)
