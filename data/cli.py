"""``specens data …``: import datasets into the shard format, and inspect them."""

from __future__ import annotations

import json

import click

from .format import load_info


@click.group("data")
def data_cli():
    """Build datasets of WebDataset shards plus dataset.json (docs/data.md: the shard format)."""


_out = click.option("--out", required=True, type=click.Path(file_okay=False), help="Dataset directory to write.")
_seed = click.option(
    "--seed", default=0, show_default=True, type=click.IntRange(0, 2**32 - 1), help="Seed of every random choice."
)
_shard = click.option(
    "--shard-size", default=10_000, show_default=True, type=click.IntRange(min=1), help="Samples per shard."
)
_count = click.IntRange(min=1)
_fraction = click.FloatRange(0, 1, max_open=True)


@data_cli.command("glyphs")
@_out
@click.option(
    "--classes",
    "n_classes",
    default=200,
    show_default=True,
    type=click.IntRange(min=0),
    help="Number of characters; 0 takes all (DejaVu letters: about 1,400 after removing look-alikes).",
)
@click.option("--train-per-class", default=48, show_default=True, type=_count)
@click.option("--val-per-class", default=8, show_default=True, type=_count)
@click.option("--test-per-class", default=8, show_default=True, type=_count)
@click.option("--size", default=32, show_default=True, type=click.IntRange(min=4), help="Image side in pixels.")
@click.option(
    "--font",
    "fonts",
    multiple=True,
    type=click.Path(exists=True),
    help="A font file (.ttf/.otf/.ttc/.otc) or folder to render from; repeatable. Default: the embedded DejaVu faces.",
)
@click.option(
    "--charset",
    default=None,
    help="letters, gb2312-1 (3,755 hanzi), gb2312 (6,763) or a UTF-8 file of characters "
    "[default: gb2312-1 with --font, letters without].",
)
@click.option("--val-face", "val_faces", multiple=True, help="A face (name substring) for validation; repeatable.")
@click.option("--test-face", "test_faces", multiple=True, help="A face (name substring) for test; repeatable.")
@click.option(
    "--like",
    type=click.Path(exists=True, file_okay=False),
    help="Render this dataset's classes again from --font, every face into the test split.",
)
@click.option(
    "--augment",
    type=click.Choice(["jitter", "strong"]),
    default=None,
    help="Renderings: a light jitter, or elastic / affine distortion, stroke weight, blur, levels "
    "and noise [default: strong with --font, jitter without].",
)
@click.option(
    "--workers",
    default=0,
    show_default=True,
    type=click.IntRange(min=0),
    help="Rendering processes; 0: one per CPU for splits of 20,000 images or more. The output does not depend on it.",
)
@_seed
@_shard
def glyphs(out, n_classes, fonts, charset, **options):
    """Characters rendered from type faces, with test faces never seen in training: by default
    Unicode letters from the DejaVu faces matplotlib ships, grouped by base letter; with --font,
    any character set from your fonts (printed Chinese: --charset gb2312-1)."""
    from .glyphs import import_glyphs

    charset = charset or ("gb2312-1" if fonts and not options.get("like") else "letters")
    import_glyphs(out, n_classes=n_classes or None, fonts=list(fonts) or None, charset=charset, **options)
    _summary(out)


@data_cli.command("synthetic")
@_out
@click.option("--classes", "n_classes", default=20, show_default=True, type=click.IntRange(min=2))
@click.option(
    "--groups", "n_groups", default=4, show_default=True, type=_count, help="Planted groups of confusable classes."
)
@click.option("--dim", default=16, show_default=True, type=_count, help="Input dimension.")
@click.option("--train-per-class", default=200, show_default=True, type=_count)
@click.option("--noise", default=1.0, show_default=True, help="Within-class noise (larger: more confusion).")
@_seed
@_shard
def synthetic(out, n_classes, n_groups, dim, train_per_class, noise, seed, shard_size):
    """A seeded hierarchical Gaussian mixture with planted groups (fast unit tests)."""
    from .synthetic import import_synthetic

    import_synthetic(
        out,
        n_classes=n_classes,
        n_groups=n_groups,
        dim=dim,
        n_train=train_per_class,
        noise=noise,
        seed=seed,
        shard_size=shard_size,
    )
    _summary(out)


def _idx_command(name: str, classes: str, doc: str):
    """``specens data <name>``; ``classes`` names the class list in :mod:`.importers`, read when the
    command runs (importing the importers at module level would import scikit-learn and WebDataset
    for every ``--help``)."""

    @data_cli.command(name, help=doc)
    @click.option(
        "--source",
        required=True,
        type=click.Path(exists=True, file_okay=False),
        help="Folder of the idx files (train-images-idx3-ubyte.gz, ...).",
    )
    @_out
    @click.option(
        "--val-size",
        default=5000,
        show_default=True,
        type=click.IntRange(min=0),
        help="Last training images kept for validation.",
    )
    @_shard
    def cmd(source, out, val_size, shard_size):
        from . import importers

        importers.import_idx(source, out, name, getattr(importers, classes), val_size=val_size, shard_size=shard_size)
        _summary(out)

    return cmd


_idx_command("mnist", "MNIST_CLASSES", "MNIST digits from their idx files (LeCun & Cortes).")
_idx_command("fashion-mnist", "FASHION_CLASSES", "Fashion-MNIST from its idx files (Zalando Research).")


def _featurizer_options(f):
    from .text import DEFAULT_MAX_LENGTH, HashedNgrams

    d = HashedNgrams()
    f = click.option(
        "--max-length",
        default=DEFAULT_MAX_LENGTH,
        show_default=True,
        type=click.IntRange(2, 8192),
        help="Tokens per text with --tokenizer (truncated, padded).",
    )(f)
    f = click.option(
        "--tokenizer",
        default=None,
        type=click.Path(exists=True, file_okay=False),
        help="A transformers model directory: store its tokenizer's ids and attention masks (for a "
        "transformers generalist, docs/own-generalist.md) instead of hashed n-grams.",
    )(f)
    f = click.option("--buckets", default=d.buckets, show_default=True, help="Hash buckets of the n-gram featuriser.")(
        f
    )
    f = click.option("--max-tokens", default=d.max_tokens, show_default=True, help="Token ids kept per text.")(f)
    return f


def _featurizer(buckets: int, max_tokens: int, tokenizer: str | None, max_length: int):
    """The featuriser the options name: a transformers tokenizer (``--tokenizer``) or hashed
    n-grams; an option of the other one changed from its default is refused (it would do nothing)."""
    from .text import DEFAULT_MAX_LENGTH, HashedNgrams, Tokenized

    d = HashedNgrams()
    if tokenizer is not None:
        if (buckets, max_tokens) != (d.buckets, d.max_tokens):
            raise click.UsageError(
                "--buckets and --max-tokens set the n-gram featuriser; with --tokenizer use --max-length"
            )
        return Tokenized(tokenizer, max_length)
    if max_length != DEFAULT_MAX_LENGTH:
        raise click.UsageError("--max-length needs --tokenizer (the n-gram featuriser keeps --max-tokens ids)")
    return HashedNgrams(buckets=buckets, max_tokens=max_tokens)


@data_cli.command("clinc150")
@click.option(
    "--source",
    required=True,
    type=click.Path(exists=True, file_okay=False),
    help="Folder holding data_full.json and domains.json.",
)
@_out
@_featurizer_options
@_shard
def clinc150(source, out, buckets, max_tokens, tokenizer, max_length, shard_size):
    """CLINC150 intents (150 classes); its 10 domains become the known groups."""
    from .importers import import_clinc150

    import_clinc150(source, out, _featurizer(buckets, max_tokens, tokenizer, max_length), shard_size=shard_size)
    _summary(out)


@data_cli.command("banking77")
@click.option(
    "--source",
    required=True,
    type=click.Path(exists=True, file_okay=False),
    help="Folder holding train.csv, test.csv and categories.json.",
)
@_out
@_featurizer_options
@click.option("--val-fraction", default=0.1, show_default=True, type=_fraction)
@_seed
@_shard
def banking77(source, out, buckets, max_tokens, tokenizer, max_length, val_fraction, seed, shard_size):
    """Banking77 intents (77 classes); validation carved from train, stratified."""
    from .importers import import_banking77

    import_banking77(
        source,
        out,
        _featurizer(buckets, max_tokens, tokenizer, max_length),
        val_fraction=val_fraction,
        seed=seed,
        shard_size=shard_size,
    )
    _summary(out)


@data_cli.command("text")
@click.option(
    "--train",
    "train_file",
    required=True,
    type=click.Path(dir_okay=False),
    help="Training examples: .csv, .tsv (with a header line) or .jsonl (one JSON object a line).",
)
@click.option(
    "--val",
    "val_file",
    type=click.Path(dir_okay=False),
    help="Validation examples (same layout); default: --val-fraction of --train, stratified.",
)
@click.option(
    "--test",
    "test_file",
    type=click.Path(dir_okay=False),
    help="Test examples (same layout); default: --test-fraction of --train, stratified.",
)
@_out
@click.option("--text-column", default="text", show_default=True, help="Column (JSON field) of the text.")
@click.option("--label-column", default="label", show_default=True, help="Column (JSON field) of the label.")
@click.option(
    "--group-column", default=None, help="Optional column naming each label's group (a known grouping of the labels)."
)
@click.option(
    "--val-fraction", default=0.1, show_default=True, type=_fraction, help="Of --train, when --val is not given."
)
@click.option(
    "--test-fraction", default=0.1, show_default=True, type=_fraction, help="Of --train, when --test is not given."
)
@click.option("--encoding", default="utf-8", show_default=True, help="Text encoding of the files.")
@click.option("--name", default=None, help="Dataset name (default: the --out folder's name).")
@_featurizer_options
@_seed
@_shard
def text(
    train_file,
    val_file,
    test_file,
    out,
    text_column,
    label_column,
    group_column,
    val_fraction,
    test_fraction,
    encoding,
    name,
    buckets,
    max_tokens,
    tokenizer,
    max_length,
    seed,
    shard_size,
):
    """Your own text classification data (intents, topics, ...): CSV, TSV or JSON Lines files of a
    text and a label column, featurised like CLINC150 and Banking77, or with a transformers
    model's own tokenizer (--tokenizer MODEL_DIR)."""
    from .tables import import_text

    import_text(
        train_file,
        out,
        val=val_file,
        test=test_file,
        text=text_column,
        label=label_column,
        group=group_column,
        featurizer=_featurizer(buckets, max_tokens, tokenizer, max_length),
        val_fraction=val_fraction,
        test_fraction=test_fraction,
        seed=seed,
        encoding=encoding,
        name=name,
        shard_size=shard_size,
    )
    _summary(out)


@data_cli.command("folder")
@click.option(
    "--source",
    required=True,
    type=click.Path(exists=True, file_okay=False),
    help="Root with one sub-folder of .png/.jpg images per class.",
)
@_out
@click.option("--size", type=click.IntRange(min=1), default=None, help="Resize every image to SIZE x SIZE.")
@click.option(
    "--grayscale/--rgb",
    default=None,
    help="One channel or three [default: one when every image is stored greyscale].",
)
@click.option("--val-fraction", default=0.1, show_default=True, type=_fraction)
@click.option("--test-fraction", default=0.1, show_default=True, type=_fraction)
@_seed
@_shard
def folder(**options):
    """Images in SOURCE/<class>/<file>.png|jpg, split train/val/test by class."""
    from .importers import import_folder

    import_folder(**options)
    _summary(options["out"])
    _, height, width = load_info(options["out"]).input.shape
    if options["size"] is None and height * width > 48 * 48:
        click.echo(
            f"note: images are {height}x{width}; an image generalist's cost grows with the pixel count, and "
            f"--size 32 stores {height * width / 32**2:.0f}x fewer pixels per image (try it first)"
        )


@data_cli.command("arrays")
@click.option(
    "--x", "x_path", required=True, type=click.Path(exists=True, dir_okay=False), help="Inputs, .npy (N, ...)."
)
@click.option("--y", "y_path", required=True, type=click.Path(exists=True, dir_okay=False), help="Labels, .npy (N,).")
@_out
@click.option(
    "--classes",
    "classes_file",
    type=click.Path(exists=True, dir_okay=False),
    help="Text file of class names, one a line (default: 0, 1, ...).",
)
@click.option("--val-fraction", default=0.1, show_default=True, type=_fraction)
@click.option("--test-fraction", default=0.1, show_default=True, type=_fraction)
@_seed
@_shard
def arrays(x_path, y_path, out, classes_file, val_fraction, test_fraction, seed, shard_size):
    """NumPy arrays x.npy / y.npy, split train/val/test by class."""
    from .importers import import_arrays, read_class_names

    import_arrays(
        x_path,
        y_path,
        out,
        read_class_names(classes_file) if classes_file else None,
        val_fraction=val_fraction,
        test_fraction=test_fraction,
        seed=seed,
        shard_size=shard_size,
    )
    _summary(out)


@data_cli.command("info")
@click.argument("dataset")
@click.option(
    "--json", "as_json", is_flag=True, help="Print the dataset's description (dataset.json, validated) as JSON."
)
@click.option("--quick", is_flag=True, help="Check dataset.json and that its shards exist, without reading them.")
def info(dataset, as_json, quick):
    """Check a dataset directory (or URL) and summarise it: by default every sample of every shard
    is read and checked as training would (counts, labels, shapes, dtypes, truncation)."""
    from .shards import verify_dataset

    if not quick:
        verify_dataset(dataset, progress=not as_json)
    if as_json:
        click.echo(json.dumps(load_info(dataset).to_json(), indent=1, ensure_ascii=False))
    else:
        _summary(dataset)


def _summary(root: str) -> None:
    info = load_info(root)
    groups = f", {len(info.groups)} known groups" if info.groups else ""
    click.echo(
        f"{root}: {info.name}, {info.n_classes} classes{groups}, input {info.input.kind} "
        f"{info.input.dtype}{list(info.input.shape)}"
    )
    for name, s in info.splits.items():
        click.echo(f"  {name:5s} {s.num_samples:8d} samples in {len(s.shards)} shard(s)")
