"""``specens generalist …``: train, evaluate and predict with the generalist (docs/method.md §1-2)."""

from __future__ import annotations

import json

import click

from specens.core import options
from specens.core.config import parse_overrides

from .config import TrainConfig


@click.group("generalist")
def generalist_cli():
    """Train the generalist on all classes (plainly or distilled), evaluate it, write its logits."""


@generalist_cli.command("train")
@options.config_file("TrainConfig", "generalist")
@click.option("--data", help=options.required("Dataset directory or URL (overrides the config)."))
@click.option("--out", help=options.required("Run directory (overrides the config). Rerunning resumes it."))
@click.option("--epochs", type=int, help="Training epochs.")
@click.option("--teacher", multiple=True, help="Run directory of a teacher to distil from; repeat for an ensemble.")
@options.device(configured=True)
@options.overrides
@click.option(
    "--restart",
    is_flag=True,
    help="Discard checkpoints in OUT made with another config and train afresh (default: refuse).",
)
@options.quiet
@options.trust_code
def train(config_path, data, out, epochs, teacher, device, sets, restart, quiet, trust_code):
    """Train a generalist; the best validation epoch is exported to OUT/model.safetensors + model.json."""
    from .train import train_generalist

    overrides = {
        "data": data,
        "out": out,
        "epochs": epochs,
        "device": device,
        "teacher": list(teacher) or None,
        "trust_code": trust_code or None,
        **parse_overrides(sets),
    }
    cfg = options.load(TrainConfig, config_path, overrides)
    result = train_generalist(cfg, progress=not quiet, restart=restart)
    last = result.history[-1]
    best = result.history[result.best_epoch - 1]
    if best.val_top1 is not None:
        score = f"val top-1 {best.val_top1:.4f}"
        if best is not last and last.val_top1 is not None:
            score += f" (last epoch, {last.epoch}: {last.val_top1:.4f})"
    else:
        score = "no validation split: the last epoch exported"
    click.echo(f"generalist {result.fingerprint} in {result.run_dir}: best epoch {result.best_epoch}, {score}")
    if best.val_top1 is not None:
        _warn_near_chance(best.val_top1, cfg)


def _warn_near_chance(top1: float, cfg: TrainConfig) -> None:
    """A ``Warning:`` line on stderr when the exported net's validation top-1 is within 2x of
    chance (and within 0.15 of it, for a few classes): a learning rate at either end of its range
    does this, and the net would otherwise be exported, and used by the next stages, without a word."""
    from specens.data.format import load_info

    n = load_info(cfg.data).n_classes
    chance = 1 / n
    if top1 <= min(2 * chance, chance + 0.15):
        click.echo(
            f"Warning: the exported net is near chance: best validation top-1 {top1:.4f}, chance {chance:.4f} "
            f"({n} classes); lr={cfg.lr:g} may be too high or too low for this model (try --set lr=...)",
            err=True,
        )


@generalist_cli.command("eval")
@click.option(
    "--run",
    "run_dir",
    required=True,
    type=click.Path(exists=True, file_okay=False),
    help="Run directory of a trained generalist.",
)
@click.option("--data", required=True, help="Dataset directory or URL (dataset.json + shards).")
@click.option("--split", default="test", show_default=True)
@click.option("--batch-size", default=512, show_default=True, type=click.IntRange(min=1))
@options.device()
@options.trust_code
def eval_cmd(run_dir, data, split, batch_size, device, trust_code):
    """Top-1, top-5 and negative log-likelihood on one split, as JSON."""
    from .evaluate import evaluate_generalist

    metrics = evaluate_generalist(run_dir, data, split, batch_size, device, trust_code=trust_code)
    click.echo(json.dumps(metrics, indent=1))


@generalist_cli.command("predict")
@click.option("--run", "run_dir", required=True, type=click.Path(exists=True, file_okay=False))
@click.option("--data", required=True, help="Dataset directory or URL (dataset.json + shards).")
@click.option("--split", default="train", show_default=True)
@click.option(
    "--out",
    required=True,
    type=click.Path(file_okay=False),
    help="Folder for logits.npy, labels.npy, keys.txt and predictions.json.",
)
@click.option("--batch-size", default=512, show_default=True, type=click.IntRange(min=1))
@options.device()
@options.trust_code
def predict(run_dir, data, split, out, batch_size, device, trust_code):
    """Write the generalist's logits for a split, in the split's order, for later stages."""
    from .evaluate import predict_generalist

    meta = predict_generalist(run_dir, data, split, out, batch_size, device, trust_code=trust_code)
    click.echo(f"wrote logits of {meta.n_samples} samples x {meta.n_classes} classes to {out}")


@generalist_cli.command("import")
@click.option(
    "--hf",
    "hf_dir",
    type=click.Path(exists=True, file_okay=False),
    help="A transformers sequence-classification directory (config.json, model.safetensors, tokenizer.json).",
)
@click.option(
    "--weights",
    type=click.Path(exists=True, dir_okay=False),
    help="A state dict (.safetensors, or .pt read with weights_only=True) of a specens architecture (--model).",
)
@click.option("--model", default=None, help="With --weights: the architecture (resnet, ngram, mlp, cnn, bag).")
@click.option("--data", required=True, help="The dataset it classifies (with --hf: tokenized by its tokenizer).")
@click.option(
    "--out", required=True, type=click.Path(file_okay=False), help="Run directory to create (model.json + weights)."
)
@click.option(
    "--classes",
    "classes_file",
    type=click.Path(exists=True, dir_okay=False),
    help="With --hf: the model's class names in output order, one a line (default: its config's id2label).",
)
@click.option(
    "--epochs",
    default=0,
    show_default=True,
    type=click.IntRange(min=0),
    help="Passes over this dataset's training split the model was trained for; gives its estimated training "
    "cost (the specialists' matched length, the compute-matched budgets). 0: unknown.",
)
@options.device()
@options.overrides
@options.quiet
def import_cmd(hf_dir, weights, model, data, out, classes_file, epochs, device, sets, quiet):
    """A generalist run directory from a model you already have, scored on the dataset's splits, for
    `specens cluster`, `specens specialists train`, `specens evaluate` and `specens baseline`
    (docs/own-generalist.md). --set records the recipe it was trained with (lr, batch_size,
    weight_decay, warmup, schedule, optimizer, momentum), which `specens baseline` trains with;
    with --weights, --set model_kwargs=JSON gives the architecture's arguments."""
    from .importing import import_hf, import_state_dict, summary_lines

    if (hf_dir is None) == (weights is None):
        raise click.UsageError("give exactly one of --hf MODEL_DIR and --weights FILE")
    overrides = parse_overrides(sets)
    model_kwargs = overrides.pop("model_kwargs", None)
    if hf_dir is not None:
        if model or model_kwargs is not None:
            raise click.UsageError("--model and model_kwargs go with --weights; --hf reads the model's own config.json")
        result = import_hf(hf_dir, data, out, classes_file, epochs, device, not quiet, recipe=overrides)
    else:
        if classes_file:
            raise click.UsageError("--classes goes with --hf; a state dict's classes are the dataset's, in its order")
        if not model:
            raise click.UsageError("--weights needs --model (the architecture the state dict is for)")
        try:
            kwargs = json.loads(model_kwargs or "{}")
        except ValueError as e:
            raise click.UsageError(f"--set model_kwargs=...: not JSON ({e})") from None
        if not isinstance(kwargs, dict):
            raise click.UsageError("--set model_kwargs=...: expected a JSON object")
        result = import_state_dict(weights, data, out, model, kwargs, epochs, device, not quiet, recipe=overrides)
    for line in summary_lines(result, out):
        click.echo(line)
