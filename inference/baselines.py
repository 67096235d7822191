"""Compute-matched alternatives to the specialists: what the same training compute buys otherwise.

The question an adopter asks of a specialist ensemble is not "does it beat its generalist?" but
"does it beat what I would do with the same compute instead?". For a run directory holding a
trained generalist and its specialists, :func:`compute_matched` trains and evaluates, side by side
on one split:

- **continued**: the generalist trained further from its own weights with the specialists' total
  training FLOPs B, converted to generalist examples at the generalist's own FLOPs per training
  example (``cost.train_flops / cost.examples``); a fresh optimiser with the generalist's schedule
  (warm-up, cosine) over that many examples, early stopping on validation as for the generalist;
- **seeds**: an ensemble of k generalists, the run's own and k − 1 trained exactly as it was but
  from seeds 1 … k − 1, with k = round((G + B) / G) so that its training cost matches generalist +
  specialists (G the generalist's FLOPs); the mean of their probabilities; inference costs k
  generalist passes;
- **tfidf** (datasets of hashed n-gram tokens, :mod:`specens.data.text`): TF-IDF over the tokens
  (each distinct token once, sublinear TF) + ``LogisticRegression(C=10)`` from scikit-learn, the
  plain strong baseline of text classification, on the very features the text generalist sees;
- **wider**: a larger generalist, the run's architecture widened (:func:`wider_spec`) until one
  forward pass costs what the ensemble's does (its measured mean of specialist passes per example),
  trained from scratch as the generalist was with the total FLOPs of generalist + specialists: the
  alternative at the ensemble's serving cost;
- the **generalist** and the **specialist ensemble** themselves (:func:`evaluate_ensemble`).

Trained alternatives live under ``RUN/baselines/`` and resume or skip like any generalist run; the
table is written to ``RUN/baselines/baselines.json``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from specens.core.config import load_config
from specens.core.cost import format_flops, forward_flops
from specens.core.device import resolve_device
from specens.core.errors import CheckpointError, ConfigError
from specens.core.io import check_no_links, check_outside_inputs, write_json_atomic
from specens.data.format import load_info
from specens.data.shards import iter_split
from specens.generalist.checkpoint import load_generalist, training_config
from specens.generalist.config import TrainConfig
from specens.generalist.evaluate import Metrics
from specens.generalist.models import ModelSpec

from .baseline_report import BaselineReport, BaselineRow, Budget
from .ensemble import Ensemble
from .evaluate import evaluate_ensemble
from .report import EvaluationReport

BASELINES = "baselines"
ALL_ALTERNATIVES = ("continued", "seeds", "wider", "tfidf")  # (a) continued, (b) seeds, (c) wider, and TF-IDF


def budget(ens: Ensemble, where: str | Path = "the generalist's model.json") -> Budget:
    """The generalist's training cost G, the specialists' B (every trained one, gated off or not),
    and the examples / epochs / seeds they buy for the alternatives. ``where`` names the
    generalist's ``model.json``: a G the budgets cannot be divided by (zero, or under one FLOP an
    example, as only an edited record holds) is refused naming it."""
    gen, specs = ens.training_costs["generalist"], ens.training_costs["specialists"]
    if gen is None or not gen.examples or any(c is None for c in specs):
        raise ConfigError(
            "the run's generalist or specialists carry no training cost (exported without training, or "
            "imported without --epochs); train them with specens, or import the generalist with "
            "`specens generalist import ... --epochs N`, to compare at matched compute"
        )
    g, b = gen.train_flops, sum(c.train_flops for c in specs)
    if not g / gen.examples >= 1:
        raise CheckpointError(
            f"{where}: 'metrics'.cost.train_flops is {g!r} for {gen.examples} training examples, under one "
            "FLOP an example: not a cost specens measured, and the compute-matched budgets are multiples of it"
        )
    if not math.isfinite(g + b):
        raise CheckpointError(
            f"the specialists' training costs ('cost'.train_flops of their specialist.json) sum to {b!r} "
            f"with the generalist's {g!r} ({where}): beyond any budget a run could train"
        )
    return Budget(g, b, examples=math.ceil(b / (g / gen.examples)), seeds=max(2, round((g + b) / g)))


WIDTH_KEYS = {"resnet": "width", "cnn": "width", "mlp": "hidden", "ngram": "dim", "bag": "dim"}  # what widens


def wider_spec(spec: ModelSpec, example: torch.Tensor, target_flops: float) -> tuple[ModelSpec, float]:
    """``spec`` widened until a forward pass costs about ``target_flops`` per example: its width
    argument (:data:`WIDTH_KEYS`; an MLP's hidden widths all scaled alike) set to the integer whose
    FLOPs, counted on ``example``, are closest to the target, searched by bisection (FLOPs grow with
    the width). Returns the spec and its FLOPs per example; never narrower than ``spec``."""
    key = WIDTH_KEYS.get(spec.name)
    if key is None or key not in spec.kwargs:
        raise ConfigError(
            f"model {spec.name!r}: no width argument to scale for the wider baseline (known: {sorted(WIDTH_KEYS)})"
        )
    base = spec.kwargs[key]
    unit0 = base[0] if isinstance(base, list | tuple) else int(base)

    def at(unit: int) -> ModelSpec:
        value = [max(1, round(h * unit / unit0)) for h in base] if isinstance(base, list | tuple) else unit
        return replace(spec, kwargs={**spec.kwargs, key: value})

    def flops(unit: int) -> float:
        return forward_flops(at(unit).build(trust_code=True), example)  # the run's own (already loaded) model

    lo, hi = unit0, unit0
    while flops(hi) < target_flops and hi < 64 * unit0:
        lo, hi = hi, hi * 2
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if flops(mid) < target_flops else (lo, mid)
    best = min((lo, hi), key=lambda u: abs(flops(u) - target_flops))
    return at(best), flops(best)


def _generalist_config(run_dir: Path, trust_code: bool, **changes) -> TrainConfig:
    saved = training_config(run_dir / "generalist", trust_code)
    try:
        return load_config(TrainConfig, None, {**saved, **changes})
    except ConfigError as e:
        raise ConfigError(f"{run_dir / 'generalist' / 'model.json'}: its training {e}") from None


def _probabilities(
    models: list[torch.nn.Module], data: str, split: str, device
) -> tuple[torch.Tensor, torch.Tensor, float]:
    """The mean of the models' probabilities on ``split`` (N, C), the labels (N,), and the seconds
    per example the models' forward passes took (reading and decoding the data excluded)."""
    ps, ys, seconds = [], [], 0.0
    with torch.no_grad():
        for batch in iter_split(data, split, 256):  # the batch size evaluate_ensemble times
            x = batch.inputs.to(device)
            t0 = time.perf_counter()
            ps.append(torch.stack([F.softmax(m(x).float(), 1) for m in models]).mean(0).cpu())
            seconds += time.perf_counter() - t0
            ys.append(batch.labels)
    y = torch.cat(ys)
    return torch.cat(ps), y, seconds / max(len(y), 1)


def _metrics(p: torch.Tensor, y: torch.Tensor, seconds_per_example: float | None = None) -> dict:
    m = Metrics()
    m.update(torch.log(p.clamp_min(1e-30)), y)
    r = m.result()
    out = {"top1": r["top1"], "nll": r["nll"]}
    if seconds_per_example is not None:
        out["seconds_per_example"] = seconds_per_example
    return out


def tfidf_baseline(data: str, split: str = "test", train_split: str = "train") -> dict:
    """TF-IDF + logistic regression on a token dataset's hashed n-grams (scikit-learn)."""
    from scipy.sparse import csr_matrix
    from sklearn.feature_extraction.text import TfidfTransformer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline

    info = load_info(data)

    def matrix(name):
        rows, labels = [], []
        for batch in iter_split(data, name, 1024, info=info):
            rows.append(batch.inputs.numpy())
            labels.append(batch.labels.numpy())
        ids, y = np.concatenate(rows), np.concatenate(labels)
        r, c = np.nonzero(ids)  # 0 is padding
        return r, ids[r, c], len(ids), y

    (r_train, t_train, n_train, y_train), (r_test, t_test, n_test, y_test) = matrix(train_split), matrix(split)
    # Columns for the n-grams that occur, not the hash space: a column no example has stays at zero
    # weight and changes no norm, and lbfgs over 2^20 dense coefficients per class is 10x slower.
    vocab = np.unique(np.concatenate([t_train, t_test]))

    def csr(r, tokens, n):
        x = csr_matrix((np.ones(len(r)), (r, np.searchsorted(vocab, tokens))), shape=(n, max(len(vocab), 1)))
        x.sum_duplicates()
        x.data[:] = 1.0  # each distinct token once
        return x

    x_train, x_test = csr(r_train, t_train, n_train), csr(r_test, t_test, n_test)
    t0 = time.perf_counter()
    model = make_pipeline(TfidfTransformer(sublinear_tf=True), LogisticRegression(C=10, max_iter=1000))
    model.fit(x_train, y_train)
    seconds = time.perf_counter() - t0
    proba = np.zeros((len(y_test), info.n_classes))
    proba[:, model.classes_] = model.predict_proba(x_test)
    return {
        **_metrics(torch.from_numpy(proba), torch.from_numpy(y_test)),
        "train_seconds": seconds,
        "train_flops": None,
        "inference_flops_per_example": None,
    }


def compute_matched(
    run_dir: str | Path,
    data: str,
    split: str = "test",
    device: str = "auto",
    alternatives: tuple[str, ...] | None = None,
    progress: bool = True,
    echo=print,
    evaluation: EvaluationReport | None = None,
    restart: bool = False,
    trust_code: bool = False,
    threads: int | None = None,
) -> BaselineReport:
    """Train (or reuse) the compute-matched alternatives of ``run_dir`` and evaluate them beside
    the generalist and the specialist ensemble on ``split``; returns and saves the table.
    ``alternatives``: those of :data:`ALL_ALTERNATIVES` to train; ``None``: every one that applies.
    ``evaluation``: the ensemble's :func:`evaluate_ensemble` result on ``split``, if already made.
    An alternative trained for another budget (the specialists were retrained) is refused unless
    ``restart``, which retrains it (the rerun policy of :mod:`specens.core.loop`). The alternatives
    train as the run's generalist did (``threads``, if given, replaces its CPU thread count, which
    changes nothing computed); a run whose model names code needs ``trust_code``."""
    run_dir = Path(run_dir)
    check_outside_inputs(run_dir, "--run", data=data)
    dev = resolve_device(device)
    ens = Ensemble.load(run_dir, device=device, trust_code=trust_code)
    ens.dataset_info(data)  # its classes and input shape are the run's, before anything trains
    b = budget(ens, run_dir / "generalist" / "model.json")
    out = check_no_links(run_dir, run_dir / BASELINES)
    example = next(iter(iter_split(data, split, 8))).inputs.to(dev)
    f_g = forward_flops(ens.generalist.model, example)
    runtime = {"device": device} if threads is None else {"device": device, "threads": threads}

    alternatives = _applicable(alternatives, ens.generalist.spec, echo)
    r = evaluation or evaluate_ensemble(ens, data, split, progress=progress)
    rows = _measured_rows(ens, r, b, f_g)
    train = _Alternatives(ens, run_dir, data, split, dev, b, f_g, trust_code, progress, restart, echo, runtime)
    if "continued" in alternatives:
        rows["continued"] = train.continued()
    if "seeds" in alternatives:
        rows["seeds"] = train.seeds()
    if "wider" in alternatives:
        rows["wider"] = train.wider(example, rows["specialists"]["inference_flops_per_example"])
    featurizer = load_info(data).featurizer
    if "tfidf" in alternatives and featurizer is not None and featurizer.kind == "hashed-ngrams":
        echo("tfidf: TF-IDF over the hashed n-grams + logistic regression")
        rows["tfidf"] = tfidf_baseline(data, split)

    result = BaselineReport(split, b, {k: BaselineRow(**row) for k, row in rows.items()})
    write_json_atomic(out / "baselines.json", result.to_json())
    return result


def _applicable(alternatives: tuple[str, ...] | None, spec: ModelSpec, echo) -> tuple[str, ...]:
    """``alternatives`` (``None``: all of them) less (c) for a model without a width to scale (a
    transformers model: its next size is another pretrained model, not one specens can train from
    scratch here), said in one line when the alternatives were left to the default, refused before
    anything trains when (c) was asked for by name."""
    named = alternatives is not None
    alternatives = tuple(alternatives) if named else ALL_ALTERNATIVES
    if "wider" not in alternatives or spec.name in WIDTH_KEYS:
        return alternatives
    why = f"(c) the wider generalist is not defined for model {spec.name!r} (no width specens can scale and train)"
    if named:
        raise ConfigError(f"--only wider: {why}")
    echo(f"wider: skipped: {why}")
    return tuple(a for a in alternatives if a != "wider")


def _measured_rows(ens: Ensemble, r: EvaluationReport, b: Budget, f_g: float) -> dict:
    """The table's rows for what the run already holds: its generalist and its ensemble, scored
    in evaluation ``r``, with their training cost and their inference cost per example."""
    gen_cost = ens.training_costs["generalist"]
    inf = r.cost.inference
    n = max(r.n, 1)  # examples evaluated
    rows = {}
    rows["generalist"] = {
        **_scores(r.generalist),
        "train_flops": b.generalist_flops,
        "train_seconds": gen_cost.wall_seconds,
        "inference_flops_per_example": f_g,
        "seconds_per_example": inf.seconds["generalist"] / n,
    }
    rows["specialists"] = {
        **_scores(r.ensemble),
        "train_flops": b.generalist_flops + b.specialists_flops,
        "train_seconds": gen_cost.wall_seconds + r.cost.specialists.wall_seconds,
        "inference_flops_per_example": f_g * inf.predicted_ratio,
        "seconds_per_example": sum(inf.seconds.values()) / n,
        "specialists_on": len(ens.indices),
        "specialists_gated_off": len(ens.gated_off),
    }
    return rows


def _scores(s) -> dict:
    return {"top1": s.top1, "nll": s.nll}


@dataclass
class _Alternatives:
    """Trains (or reuses) the compute-matched alternatives of one run, each as the run's generalist
    was trained but for what the alternative changes, and evaluates each on ``split``."""

    ens: Ensemble
    run_dir: Path
    data: str
    split: str
    dev: torch.device
    budget: Budget
    f_g: float  # the generalist's inference FLOPs per example
    trust_code: bool
    progress: bool
    restart: bool
    echo: Callable[[str], None]
    runtime: dict  # device and, if given, threads: changes nothing computed

    def _train(self, name: str, **changes):
        """Train alternative ``name`` into ``baselines/<name>``; returns (the loaded generalist, its history)."""
        from specens.generalist.train import train_generalist

        out = str(check_no_links(self.run_dir, self.run_dir / BASELINES / name))
        cfg = _generalist_config(self.run_dir, self.trust_code, out=out, data=self.data, **{**self.runtime, **changes})
        res = train_generalist(cfg, progress=self.progress, restart=self.restart)
        return load_generalist(res.run_dir, self.dev, self.trust_code), res.history

    def _evaluate(self, models: list[torch.nn.Module]) -> dict:
        return _metrics(*_probabilities(models, self.data, self.split, self.dev))

    @property
    def _generalist_cost(self):
        return self.ens.training_costs["generalist"]

    def continued(self) -> dict:
        """(a): the generalist trained further with the specialists' FLOPs, in whole epochs of its
        own epoch size (its subset and exclusions)."""
        b = self.budget
        epochs = max(1, math.ceil(b.examples / self._generalist_cost.examples_per_epoch))
        self.echo(
            f"continued: the generalist + {epochs} epochs ({b.examples} examples = the specialists' "
            f"{format_flops(b.specialists_flops)})"
        )
        g, history = self._train("continued", init=str(self.run_dir / "generalist"), epochs=epochs)
        cost = g.record.metrics.cost
        return {
            **self._evaluate([g.model]),
            "train_flops": b.generalist_flops + cost.train_flops,
            "train_seconds": self._generalist_cost.wall_seconds + cost.wall_seconds,
            "inference_flops_per_example": self.f_g,
            "epochs_run": len(history),
        }

    def seeds(self) -> dict:
        """(b): k generalists, the run's own and k − 1 from other seeds, averaged."""
        k = self.budget.seeds
        models, flops = [self.ens.generalist.model], self.budget.generalist_flops
        seconds = self._generalist_cost.wall_seconds
        for seed in range(1, k):
            self.echo(f"seeds: generalist {seed + 1} of {k} (seed {seed})")
            g, _ = self._train(f"seed{seed}", seed=seed)
            models.append(g.model)
            flops += g.record.metrics.cost.train_flops
            seconds += g.record.metrics.cost.wall_seconds
        return {
            **self._evaluate(models),
            "train_flops": flops,
            "train_seconds": seconds,
            "inference_flops_per_example": k * self.f_g,
            "members": k,
        }

    def wider(self, example: torch.Tensor, target: float) -> dict:
        """(c): the generalist widened to ``target`` inference FLOPs per example (the ensemble's),
        trained from scratch with the FLOPs of generalist + specialists (in whole epochs of the
        generalist's own epoch size)."""
        from specens.core.cost import BACKWARD_FACTOR, OPTIMIZER_FLOPS_PER_PARAMETER

        b, gen_cost = self.budget, self._generalist_cost
        spec, f_w = wider_spec(self.ens.generalist.spec, example, target)
        params = sum(p.numel() for p in spec.build(trust_code=True).parameters())
        batch = gen_cost.examples / max(gen_cost.steps, 1)
        per_example = BACKWARD_FACTOR * f_w + OPTIMIZER_FLOPS_PER_PARAMETER * params / batch
        total = b.generalist_flops + b.specialists_flops
        epochs = max(1, math.ceil(total / per_example / gen_cost.examples_per_epoch))
        self.echo(
            f"wider: {spec.name} {spec.kwargs.get(WIDTH_KEYS[spec.name])} ({format_flops(f_w)} per example, the "
            f"ensemble's {format_flops(target)}), {epochs} epochs from scratch"
        )
        g, history = self._train(
            "wider", model=spec.name, model_kwargs=spec.kwargs, init="", epochs=epochs, device=str(self.dev)
        )
        cost = g.record.metrics.cost
        return {
            **self._evaluate([g.model]),
            "train_flops": cost.train_flops,
            "train_seconds": cost.wall_seconds,
            "inference_flops_per_example": f_w,
            "target_inference_flops_per_example": target,
            "model_kwargs": spec.kwargs,
            "parameters": params,
            "epochs_run": len(history),
        }


def format_table(result: BaselineReport) -> str:
    """The comparison as an aligned plain-text table."""
    names = {
        "generalist": "generalist",
        "specialists": "specialist ensemble",
        "continued": "(a) generalist continued",
        "seeds": "(b) ensemble of generalists",
        "wider": "(c) wider generalist",
        "tfidf": "TF-IDF + logistic regression",
    }
    lines = [
        f"{'':<36}{'top-1':>8}{'NLL':>8}{'train FLOPs':>14}{'train s':>9}{'infer FLOPs/ex':>16}{'infer ms/ex':>13}"
    ]
    for key, row in result.rows.items():
        label = names[key] + (f" (k={row.members})" if row.members else "")
        tf = format_flops(row.train_flops) if row.train_flops else "n/a"
        inf = format_flops(row.inference_flops_per_example) if row.inference_flops_per_example else "n/a"
        ms = f"{1e3 * row.seconds_per_example:.3f}" if row.seconds_per_example else "n/a"
        lines.append(f"{label:<36}{row.top1:>8.4f}{row.nll:>8.4f}{tf:>14}{row.train_seconds:>9.0f}{inf:>16}{ms:>13}")
    return "\n".join(lines)
