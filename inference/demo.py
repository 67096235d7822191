"""``specens demo``: the main job end to end on the embedded glyph dataset."""

from __future__ import annotations

import time
from pathlib import Path

import click


@click.command("demo")
@click.option("--run", "run_dir", default="runs/demo", show_default=True, type=click.Path(file_okay=False),
              help="Run directory; rerunning resumes and skips finished stages.")
@click.option("--classes", "n_classes", default=200, show_default=True, help="Glyph classes.")
@click.option("--epochs", default=6, show_default=True, help="Generalist epochs.")
@click.option("--device", default="auto", show_default=True)
def demo(run_dir, n_classes, epochs, device):
    """Build the glyph dataset and train a generalist on it, then report test accuracy.

    Defaults take a few minutes on 2 CPU cores.
    """
    from specens.data.format import INFO_FILE
    from specens.data.glyphs import import_glyphs
    from specens.generalist.config import TrainConfig
    from specens.generalist.evaluate import evaluate_generalist
    from specens.generalist.train import train_generalist

    t0 = time.perf_counter()
    root = Path(run_dir)
    data = root / "glyphs"
    if (data / INFO_FILE).is_file():
        click.echo(f"[1/3] dataset: reusing {data}")
    else:
        click.echo(f"[1/3] dataset: rendering {n_classes} glyph classes into {data}")
        import_glyphs(str(data), n_classes=n_classes)
    click.echo("[2/3] generalist: training")
    cfg = TrainConfig(data=str(data), out=str(root / "generalist"), epochs=epochs, device=device,
                      model_kwargs={"width": 32, "hidden": 256})
    train_generalist(cfg)
    click.echo("[3/3] evaluation on the test faces")
    m = evaluate_generalist(cfg.out, str(data), "test", device=device)
    click.echo(f"generalist test top-1 {m['top1']:.4f}, top-5 {m['top5']:.4f}, NLL {m['nll']:.4f} "
               f"on {m['n']} images ({time.perf_counter() - t0:.0f} s in all); run directory: {root}")
