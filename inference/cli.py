"""``specens infer`` and ``specens evaluate``: thin wrappers over :func:`~specens.inference.infer.infer`
and :func:`~specens.inference.evaluate.evaluate_ensemble`."""

from __future__ import annotations

import click

from specens.core import options


@click.command("infer")
@options.run_dir("Run directory: generalist/, clusters/clusters.json, specialists/.")
@click.option("--data", required=True, help="Dataset directory or URL (dataset.json + shards).")
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Output directory; rerun to resume.")
@click.option("--split", default="test", show_default=True)
@click.option("--top-k", default=5, show_default=True, type=click.IntRange(min=1), help="Classes written per sample.")
@click.option("--save-q", is_flag=True, help="Also write the full q of each shard as <shard>.q.npy.")
@options.top_n
@click.option("--batch-size", default=256, show_default=True, type=click.IntRange(min=1))
@options.all_specialists
@click.option(
    "--workers",
    default=1,
    show_default=True,
    type=click.IntRange(min=1),
    help="Write the shards in this many Ray tasks (a local Ray cluster, or the cluster of `ray job submit`).",
)
@click.option(
    "--specialist-memory",
    default=2048,
    show_default=True,
    type=click.IntRange(min=0),
    help="MiB of specialist weights kept loaded (per worker); beyond it specialists load as batches "
    "route to them, least recently used dropped first.",
)
@options.device()
@options.quiet
@options.trust_code
def infer_cmd(
    run_dir,
    data,
    out,
    split,
    top_k,
    save_q,
    top_n,
    batch_size,
    all_specialists,
    workers,
    specialist_memory,
    device,
    quiet,
    trust_code,
):
    """Predict every sample of a split with the ensemble; one output file per input shard."""
    from .infer import infer

    m = infer(
        run_dir,
        data,
        out,
        split=split,
        top_k=top_k,
        save_q=save_q,
        batch_size=batch_size,
        top_n=top_n,
        device=device,
        all_specialists=all_specialists,
        workers=workers,
        specialist_memory=specialist_memory * 2**20,
        progress=not quiet,
        trust_code=trust_code,
    )
    click.echo(f"{m['n_samples']} predictions in {len(m['shards'])} shard file(s) under {out}")


@click.command("evaluate")
@options.run_dir("Run directory: generalist/, clusters/clusters.json, specialists/.")
@click.option("--data", required=True, help="Labelled dataset directory or URL.")
@click.option("--split", default="test", show_default=True)
@click.option(
    "--out",
    default=None,
    type=click.Path(file_okay=False),
    help="Where evaluation.json and table4.png go [default: RUN/evaluation].",
)
@options.top_n
@click.option("--batch-size", default=256, show_default=True, type=click.IntRange(min=1))
@options.all_specialists
@options.device()
@options.quiet
@options.trust_code
def evaluate_cmd(run_dir, data, split, out, top_n, batch_size, all_specialists, device, quiet, trust_code):
    """Generalist alone vs the ensemble: top-1/5, conditional accuracy, the paper's Table 4, and
    what both cost to train and to run."""
    from .ensemble import Ensemble
    from .evaluate import evaluate_ensemble, format_report, save_report

    ens = Ensemble.load(run_dir, device=device, top_n=top_n, all_specialists=all_specialists, trust_code=trust_code)
    r = evaluate_ensemble(ens, data, split, batch_size, progress=not quiet)
    from pathlib import Path

    from specens.core.io import check_no_links, check_outside_inputs

    out = out or check_no_links(run_dir, Path(run_dir) / "evaluation")
    check_outside_inputs(out, "--out", data=data)
    save_report(r, out)
    click.echo(format_report(r))
    click.echo(f"saved {out}/evaluation.json and {out}/table4.png")


@click.command("baseline")
@options.run_dir("Run directory with a trained generalist and specialists.")
@click.option("--data", required=True, help="Labelled dataset directory or URL.")
@click.option("--split", default="test", show_default=True)
@click.option(
    "--only",
    type=click.Choice(["continued", "seeds", "wider", "tfidf"]),
    multiple=True,
    help="Train only these alternatives (repeatable) [default: all that apply].",
)
@click.option("--restart", is_flag=True, help="Retrain alternatives trained for another budget (default: refuse).")
@click.option(
    "--threads",
    type=click.IntRange(min=0),
    help="CPU threads for the alternatives' training [default: the generalist's]; changes nothing computed.",
)
@options.device()
@options.quiet
@options.trust_code
def baseline_cmd(run_dir, data, split, only, restart, threads, device, quiet, trust_code):
    """The specialists against the same training compute spent otherwise: (a) the generalist
    trained further, (b) an ensemble of generalists from other seeds, (c) a wider generalist at
    the ensemble's inference FLOPs, and for text TF-IDF + logistic regression. Trained
    alternatives go to RUN/baselines/ (rerun: reused)."""
    from .baselines import compute_matched, format_table

    r = compute_matched(
        run_dir,
        data,
        split,
        device,
        alternatives=only or None,  # None: every alternative that applies to the run's model
        echo=click.echo,
        restart=restart,
        trust_code=trust_code,
        threads=threads,
        progress=not quiet,
    )
    click.echo(format_table(r))
    click.echo(f"saved {run_dir}/baselines/baselines.json")


@click.command("distill")
@options.run_dir("Run directory whose ensemble teaches: generalist/, clusters/clusters.json, specialists/.")
@click.option("--data", required=True, help="Dataset directory or URL (its training split).")
@click.option(
    "--out",
    default=None,
    type=click.Path(file_okay=False),
    help="The student's run directory [default: RUN/student]; rerun to resume.",
)
@click.option(
    "--q-cache",
    multiple=True,
    type=click.Path(file_okay=False),
    help="A `specens infer --save-q` output to read q from (one per split read) instead of running the "
    "ensemble; repeatable.",
)
@click.option(
    "--transfer",
    multiple=True,
    type=click.Path(file_okay=False),
    help="An extra transfer set (dataset directory, same classes) learnt from q alone; repeatable.",
)
@click.option("--split", default="test", show_default=True, help="Split of the final comparison.")
@click.option("--epochs", type=int, help="At most this many epochs [default 10, early-stopped].")
@options.device(configured=True)
@options.overrides
@click.option("--restart", is_flag=True, help="Discard checkpoints in OUT made with another config (default: refuse).")
@options.quiet
@options.trust_code
def distill_cmd(run_dir, data, out, q_cache, transfer, split, epochs, device, sets, restart, quiet, trust_code):
    """Distil the specialist ensemble into one student network of the generalist's size, then
    compare student, generalist and ensemble (top-1, NLL, inference cost, the share of the
    ensemble's gain kept). The student is an exported generalist: OUT/model.safetensors + model.json."""
    from specens.core.config import parse_overrides

    from .distill import distill

    overrides = {
        "q_cache": list(q_cache) or None,
        "transfer": list(transfer) or None,
        "epochs": epochs,
        "device": device,
        "trust_code": trust_code or None,
        **parse_overrides(sets),
    }
    distill(run_dir, data, out, overrides=overrides, split=split, progress=not quiet, restart=restart, echo=click.echo)
