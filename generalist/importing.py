"""``specens generalist import``: a generalist run directory from a model the user already has.

Two sources (docs/own-generalist.md):

- a transformers sequence-classification directory (``config.json``, ``model.safetensors``,
  ``tokenizer.json``): its config checked and built by :mod:`specens.generalist.hf` (a type of the
  fixed list, no custom code), weights only from safetensors, its label names (``id2label`` or a
  class file) matched to the dataset's and its head rows put in the dataset's class order, its
  tokenizer the one that tokenized the dataset;
- a state dict (``.safetensors``, or a ``.pt`` read with ``torch.load(weights_only=True)``) for one
  of specens' own architectures, with its ``model_kwargs``.

The run directory is what ``specens generalist train`` exports (``model.json`` and
``model.safetensors``), with a one-record history measured here (training top-1 on a sample in
eval mode, validation top-1 and NLL), so that the regime check, the gate and ``specens baseline``
read it as they read a trained one. The model's own training is not seen: with ``epochs`` (how
many passes over this dataset's training split it was trained or fine-tuned for) its cost is
estimated as specens counts its own (:mod:`specens.core.cost`), which gives the specialists' matched
length and the compute-matched budgets; without, the record carries no cost and those need
``--set epochs=N`` and stay unavailable.
"""

from __future__ import annotations

import itertools
import math
from pathlib import Path
from typing import Any

import torch

from specens.core.checkpoint import WEIGHTS
from specens.core.cost import BACKWARD_FACTOR, OPTIMIZER_FLOPS_PER_PARAMETER, TrainingCost, forward_flops
from specens.core.device import resolve_device
from specens.core.errors import CheckpointError, ConfigError, DataError
from specens.core.io import check_outside_inputs, check_target, fingerprint, publish_dir, read_json
from specens.data.format import INFO_FILE, DatasetInfo, load_info
from specens.data.shards import iter_split

from .checkpoint import META, GeneralistEpoch, GeneralistMetrics, save_generalist
from .evaluate import evaluate
from .models import ModelSpec

IMPORT_FILES = (META, WEIGHTS)
TRAIN_SAMPLE = 2000  # training examples scored for the record's training top-1
IMPORT_BATCH = 64  # batches scored; the batch size the estimated cost assumes when the recipe names none


def import_hf(
    model_dir: str,
    data: str,
    out: str,
    classes_file: str | None = None,
    epochs: int = 0,
    device: str = "cpu",
    progress: bool = False,
    recipe: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Import a transformers sequence classifier from ``model_dir`` as a generalist run in ``out``
    for dataset ``data``; returns the summary :func:`_finish` prints. Every refusal (a type
    outside the list, a config naming code, labels missing or not the dataset's, another
    tokenizer, weights that do not fit) comes before anything is built or written."""
    from .hf import as_classifier, check_hf_config, check_tokenizer, hf_model

    src = Path(model_dir)
    recipe = training_recipe(recipe, data, out)
    check_outside_inputs(out, "--out", hf=model_dir, data=data)
    check_target(out, IMPORT_FILES, "a generalist run directory", META)
    config_path = src / "config.json"
    raw_config = read_json(config_path, "; a transformers model directory holds one")  # read once: labels too
    config = check_hf_config(raw_config, str(config_path))
    info = load_info(data)
    weights = src / "model.safetensors"
    if not weights.is_file():
        bins = sorted(p.name for p in src.glob("*.bin"))
        pickles = f" ({', '.join(bins)} are pickles, which specens never loads: save_pretrained writes safetensors)"
        raise CheckpointError(f"{weights}: no such file" + (pickles if bins else ""))
    tok = src / "tokenizer.json"
    if not tok.is_file():  # without it nothing says the data's ids are this model's
        raise DataError(
            f"{tok}: no such file; the model's fast tokenizer (tokenizer.save_pretrained(MODEL_DIR)) must sit "
            "beside it, the one the data was tokenized with (--tokenizer MODEL_DIR)"
        )
    kwargs = {"config": config, "tokenizer": fingerprint(tok)}
    spec = ModelSpec("hf", tuple(info.input.shape), info.n_classes, kwargs).resolved()
    check_tokenizer(spec, info.featurizer, str(src), f"{data}/{INFO_FILE}")  # the data is this model's to read
    positions = config.get("max_position_embeddings")
    if isinstance(positions, int) and info.input.shape[1] > positions:
        raise DataError(
            f"{data}/{INFO_FILE}: texts of {info.input.shape[1]} tokens, but {config_path} has "
            f"max_position_embeddings {positions}: import the data with --max-length {positions} or less"
        )
    labels = _labels(raw_config, classes_file, config_path)
    order = _class_order(labels, info, classes_file or f"{config_path}: id2label", data)
    with torch.device("meta"):  # sizes checked before any allocation
        skeleton = hf_model(config, len(labels), str(config_path))
    state = _safetensors(weights, skeleton)
    model = hf_model(config, len(labels), str(config_path))
    model.load_state_dict(state)
    classifier = as_classifier(model)
    with torch.no_grad():  # the head's rows in the dataset's class order
        classifier.head.weight.copy_(classifier.head.weight[order].clone())
        classifier.head.bias.copy_(classifier.head.bias[order].clone())
    source = {"importer": "transformers", "model_dir": str(src), "weights_fingerprint": fingerprint(weights)}
    return _finish(classifier, spec, info, data, out, epochs, recipe, source, device, progress)


def import_state_dict(
    weights: str,
    data: str,
    out: str,
    model: str,
    model_kwargs: dict[str, Any] | None = None,
    epochs: int = 0,
    device: str = "cpu",
    progress: bool = False,
    recipe: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Import a state dict of a specens architecture (``model``: a registry name) as a generalist
    run in ``out`` for dataset ``data``: a ``.safetensors`` file, or a ``.pt`` / ``.pth`` read with
    ``torch.load(weights_only=True)``. Keys and shapes must be exactly the architecture's."""
    from .models import REGISTRY, check_input_dtype, data_defaults

    recipe = training_recipe(recipe, data, out)
    check_outside_inputs(out, "--out", weights=weights, data=data)
    check_target(out, IMPORT_FILES, "a generalist run directory", META)
    if model not in REGISTRY:
        raise ConfigError(f"--model {model!r}: not one of specens' architectures {sorted(REGISTRY)}")
    if model == "hf":  # its tokenizer, label names and head order come from the model directory
        raise ConfigError("--model hf: a transformers model comes in with --hf MODEL_DIR, not as a state dict")
    info = load_info(data)
    kwargs = {**data_defaults(model, info.n_classes, info.featurizer), **(model_kwargs or {})}
    spec = ModelSpec(model, tuple(info.input.shape), info.n_classes, kwargs).resolved()
    check_input_dtype(spec, info.input.dtype, f"--model {model}", f"{data}/{INFO_FILE}")
    with torch.device("meta"):
        skeleton = spec.build()
    path = Path(weights)
    if path.suffix == ".safetensors":
        state = _safetensors(path, skeleton)
    elif path.suffix in (".pt", ".pth"):
        state = _torch_state(path, skeleton)
    else:
        raise CheckpointError(f"{path}: expected a .safetensors, .pt or .pth state dict")
    net = spec.build()
    net.load_state_dict(state)
    source = {"importer": "state-dict", "weights": str(path), "weights_fingerprint": fingerprint(path)}
    return _finish(net, spec, info, data, out, epochs, recipe, source, device, progress)


def _labels(config: dict, classes_file: str | None, where: Path) -> list[str]:
    """The model's label names in its output order: the class file's lines, or ``id2label``
    (transformers' placeholder names ``LABEL_0`` … count as missing)."""
    if classes_file:
        try:
            names = [line.strip() for line in Path(classes_file).read_text(encoding="utf-8").splitlines()]
        except (OSError, UnicodeDecodeError) as e:
            raise DataError(f"{classes_file}: cannot read the class list ({e})") from None
        names = [n for n in names if n]
        if len(set(names)) != len(names):
            raise DataError(f"{classes_file}: repeats a class name")
        return names
    id2label = config.get("id2label")
    if not isinstance(id2label, dict) or not id2label:
        raise DataError(f"{where}: no id2label; name the model's classes in output order with --classes FILE")
    try:
        keyed = {int(k): v for k, v in id2label.items()}
    except (TypeError, ValueError):
        raise DataError(f"{where}: id2label keys must be the output indices 0 .. n-1") from None
    if sorted(keyed) != list(range(len(keyed))) or not all(isinstance(v, str) for v in keyed.values()):
        raise DataError(f"{where}: id2label must map every index 0 .. {len(keyed) - 1} to a class name")
    names = [keyed[i] for i in range(len(keyed))]
    if all(n == f"LABEL_{i}" for i, n in enumerate(names)):
        raise DataError(
            f"{where}: id2label holds only transformers' placeholders (LABEL_0 ...); name the model's classes "
            "in output order with --classes FILE"
        )
    return names


def _class_order(labels: list[str], info: DatasetInfo, where: str, data: str) -> list[int]:
    """For each dataset class, the model output that predicts it; the two class lists must be
    the same set (named in the refusal)."""
    missing = [c for c in info.classes if c not in labels]
    extra = [c for c in labels if c not in info.classes]
    if missing or extra or len(labels) != info.n_classes:
        parts = []
        if missing:
            parts.append(f"the dataset's {missing[:3]}{' ...' if len(missing) > 3 else ''} are not among its labels")
        if extra:
            parts.append(f"its {extra[:3]}{' ...' if len(extra) > 3 else ''} are not classes of {data}")
        raise DataError(
            f"{where}: the model's {len(labels)} labels are not the dataset's {info.n_classes} classes: "
            + "; ".join(parts or ["repeated names"])
        )
    index = {name: i for i, name in enumerate(labels)}
    return [index[c] for c in info.classes]


def _safetensors(path: Path, skeleton: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The tensors of ``path`` after checking names and shapes against ``skeleton`` (on the meta
    device) from the file's header, before any tensor is read; finite values checked after."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            shapes = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"{path}: not a safetensors file ({e})") from None
    _check_keys(path, shapes, skeleton)
    from safetensors.torch import load_file

    state = load_file(str(path))
    _check_finite(path, state)
    return state


def _torch_state(path: Path, skeleton: torch.nn.Module) -> dict[str, torch.Tensor]:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # weights_only refuses anything but tensors and plain containers
        raise CheckpointError(
            f"{path}: not a state dict torch.load(weights_only=True) reads ({str(e)[:160]})"
        ) from None
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not (isinstance(state, dict) and all(isinstance(v, torch.Tensor) for v in state.values())):
        raise CheckpointError(f"{path}: expected a mapping of parameter names to tensors")
    _check_keys(path, {k: tuple(v.shape) for k, v in state.items()}, skeleton)
    _check_finite(path, state)
    return state


def _check_keys(path: Path, shapes: dict[str, tuple[int, ...]], skeleton: torch.nn.Module) -> None:
    want = {k: tuple(v.shape) for k, v in skeleton.state_dict().items()}
    missing = sorted(set(want) - set(shapes))
    extra = sorted(set(shapes) - set(want))
    wrong = [
        f"{k} {list(shapes[k])} (the model's {list(want[k])})"
        for k in sorted(want)
        if shapes.get(k, want[k]) != want[k]
    ]
    problems = []
    if missing:
        problems.append(f"missing {missing[:3]}{' ...' if len(missing) > 3 else ''}")
    if extra:
        problems.append(f"unknown {extra[:3]}{' ...' if len(extra) > 3 else ''}")
    if wrong:
        problems.append(f"wrong shapes {wrong[:2]}{' ...' if len(wrong) > 2 else ''}")
    if problems:
        raise CheckpointError(f"{path}: the weights do not fit the model: " + "; ".join(problems))


def _check_finite(path: Path, state: dict[str, torch.Tensor]) -> None:
    for k, v in state.items():
        if v.is_floating_point() and not torch.isfinite(v).all():
            raise CheckpointError(f"{path}: tensor {k!r} holds NaN or infinite values")


RECIPE_KEYS = ("batch_size", "optimizer", "lr", "momentum", "weight_decay", "schedule", "warmup")


def training_recipe(recipe: dict[str, Any] | None, data: str, out: str) -> dict[str, Any]:
    """The optimiser settings the model was trained with (``recipe``: keys of :data:`RECIPE_KEYS`,
    values or ``--set`` strings), checked as ``specens generalist train`` checks them and typed;
    recorded in the run's config, so that `specens baseline` trains (a) and (b) as the model was
    trained rather than with specens' defaults (which a transformer may not survive)."""
    from specens.core.config import load_config

    from .config import TrainConfig

    recipe = dict(recipe or {})
    unknown = sorted(set(recipe) - set(RECIPE_KEYS))
    if unknown:
        raise ConfigError(f"--set {unknown[0]}: an import records only its training recipe ({', '.join(RECIPE_KEYS)})")
    cfg = load_config(TrainConfig, None, {"data": data, "out": out, **recipe})
    return {k: getattr(cfg, k) for k in recipe}


def _finish(model, spec, info, data, out, epochs, recipe, source, device, progress) -> dict[str, Any]:
    """Score ``model`` (training sample, validation, test), estimate its cost from ``epochs``, and
    publish the run directory ``out``; returns the scores."""
    dev = resolve_device(device)
    model = model.to(dev).eval()
    scores = {}
    for split, limit in (("train", TRAIN_SAMPLE), ("val", None), ("test", None)):
        if split in info.splits and info.splits[split].num_samples:
            batches = iter_split(data, split, IMPORT_BATCH, info=info)
            if limit:
                batches = itertools.islice(batches, math.ceil(limit / IMPORT_BATCH))
            scores[split] = evaluate(model, batches, dev, progress=progress, desc=split)
    figures = {f"{s}_{k}": scores[s][k] for s in ("train", "val") if s in scores for k in ("top1", "nll")}
    record = GeneralistEpoch(epoch=1, imported=source, **figures)
    example = next(iter(iter_split(data, "train", 8, info=info))).inputs.to(dev)
    cost = _estimated_cost(model, example, info, epochs, recipe.get("batch_size", IMPORT_BATCH))
    # stopped_early: an imported model is taken as trained to its end (the regime check's "still
    # improving" reads a run specens cut short, which an import is not)
    metrics = GeneralistMetrics(
        best_epoch=1, epochs_run=1, stopped_early=True, history=[record], teacher_fingerprints=[], cost=cost
    )
    # what `specens baseline` trains from: (a) this model further, (b) the architecture from scratch
    # for the stated epochs with specens' recipe
    config = {
        "model": spec.name,
        "model_kwargs": spec.kwargs,
        "data": str(data),
        **({"epochs": epochs} if epochs else {}),
        **recipe,
    }
    fp = {}

    def write(tmp: Path) -> None:
        fp["value"] = save_generalist(tmp, model.cpu(), spec, info.classes, config, metrics)

    publish_dir(out, write, own=IMPORT_FILES, what="a generalist run directory", record=META)
    return {"fingerprint": fp["value"], "scores": scores, "cost": cost}


def _estimated_cost(model, example, info: DatasetInfo, epochs: int, batch_size: int) -> TrainingCost:
    """The training cost specens would count for ``epochs`` passes over the training split in
    batches of ``batch_size`` (the formula of :func:`specens.core.cost.training_cost`, explained
    in :mod:`specens.core.cost`: forward + backward FLOPs per example, AdamW per step, each epoch's
    last batch a step of its own); no measured seconds. ``epochs`` 0: nothing known (zero
    examples), which the stages that need a cost refuse by name."""
    per_epoch = info.split("train").num_samples
    n = per_epoch * epochs
    steps = math.ceil(per_epoch / batch_size) * epochs
    flops = forward_flops(model, example)
    params = sum(p.numel() for p in model.parameters())
    return TrainingCost(
        examples=n,
        steps=steps,
        epochs=epochs,
        flops_per_example=flops,
        teacher_flops_per_example=0.0,
        parameters=params,
        train_flops=n * BACKWARD_FACTOR * flops + steps * OPTIMIZER_FLOPS_PER_PARAMETER * params,
        train_seconds=0.0,
        train_cpu_seconds=0.0,
        validation_seconds=0.0,
        wall_seconds=0.0,
        cpu_seconds=0.0,
        overhead_seconds=0.0,
        epochs_resumed=0,
    )


def summary_lines(result: dict[str, Any], out: str) -> list[str]:
    lines = [f"generalist {result['fingerprint']} imported into {out}"]
    for split, s in result["scores"].items():
        lines.append(f"  {split:<6} top-1 {s['top1']:.4f}  NLL {s['nll']:.4f}")
    if not result["cost"].examples:
        lines.append(
            "  no training cost recorded (--epochs not given): specialists train 30 epochs unless --set epochs=N, "
            "and `specens baseline` needs a cost"
        )
    return lines
