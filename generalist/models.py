"""Classifier architectures. Every model is a :class:`Classifier`: a ``body`` that maps inputs to
features and one final linear ``head``, because specialists copy the body and rows of the head
(docs/method.md §4, initialisation).

Models are built from a :class:`ModelSpec` (a registry name or a user's ``module:callable``, plus
keyword arguments), which checkpoints store so that they can rebuild the model without pickles.
"""

from __future__ import annotations

import importlib
import inspect
import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field, fields, replace
from typing import Any

import torch
from torch import nn

from specens.core.errors import CheckpointError, ConfigError, DataError, TrustedCodeWarning
from specens.core.records import record_fields
from specens.data.format import Featurizer


class Classifier(nn.Module):
    """``logits = head(body(x))``.

    body: maps a batch of inputs to features of shape (batch, feature_dim).
    head: ``nn.Linear(feature_dim, n_classes)``.
    """

    def __init__(self, body: nn.Module, head: nn.Linear):
        super().__init__()
        self.body, self.head = body, head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))


def small_cnn(
    input_shape: tuple[int, ...], n_classes: int, width: int = 64, hidden: int = 512, dropout: float = 0.2
) -> Classifier:
    """Three conv blocks (width, 2*width, 4*width channels; each conv-BN-ReLU twice, then pooled)
    and a hidden layer of ``hidden`` units. For images of shape (channels, H, W)."""
    if len(input_shape) != 3:
        raise ValueError(f"small_cnn takes images of shape (C, H, W), got input shape {list(input_shape)}")
    c = input_shape[0]

    def block(cin: int, cout: int) -> list[nn.Module]:
        return [
            nn.Conv2d(cin, cout, 3, padding=1, bias=False),
            nn.BatchNorm2d(cout),
            nn.ReLU(inplace=True),
            nn.Conv2d(cout, cout, 3, padding=1, bias=False),
            nn.BatchNorm2d(cout),
            nn.ReLU(inplace=True),
        ]

    body = nn.Sequential(
        *block(c, width),
        nn.MaxPool2d(2),
        *block(width, 2 * width),
        nn.MaxPool2d(2),
        *block(2 * width, 4 * width),
        nn.AdaptiveAvgPool2d(2),  # (B, 4w, 2, 2) for any input size
        nn.Flatten(),
        nn.Dropout(dropout),
        nn.Linear(16 * width, hidden),
        nn.ReLU(inplace=True),
        nn.Dropout(dropout),
    )
    return Classifier(body, nn.Linear(hidden, n_classes))


class _Residual(nn.Module):
    """Two 3x3 conv-BN layers added to a shortcut: the identity, or a strided 1x1 conv-BN where the
    shape changes (He et al. 2016, the "basic block")."""

    def __init__(self, cin: int, cout: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut = (
            nn.Identity()
            if stride == 1 and cin == cout
            else nn.Sequential(nn.Conv2d(cin, cout, 1, stride=stride, bias=False), nn.BatchNorm2d(cout))
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(self.bn2(self.conv2(out)) + self.shortcut(x))


def resnet_size(n_classes: int) -> tuple[int, int]:
    """(width, blocks per stage) of :func:`resnet` for a label space of ``n_classes``: 32 channels
    and one block per stage up to 1,000 classes, 48 channels and two blocks beyond, where a
    128-feature bottleneck grows narrow for the classes it separates (chosen on validation, with
    the step costs measured, in ``benchmarks/RESULTS.md``)."""
    return (32, 1) if n_classes <= 1000 else (48, 2)


def resnet(
    input_shape: tuple[int, ...], n_classes: int, width: int = 0, depth: int = 0, dropout: float = 0.1, pool: int = 2
) -> Classifier:
    """A small residual net for small images (the default image generalist): a 3x3 stem, three
    stages of ``depth`` residual blocks at ``width``, 2x and 4x ``width`` channels (the last two
    halve the resolution), average pooling to a ``pool`` x ``pool`` grid, dropout and the linear
    head, so it takes any input size. ``width`` / ``depth`` of 0 scale with the class count
    (:func:`resnet_size`). For images of shape (channels, H, W).

    Two choices made on validation (``benchmarks/RESULTS.md``): a 2 x 2 grid rather than global
    pooling keeps where a stroke or diacritic sits, which tells many glyphs apart; and the blocks'
    last batch norm starts at scale 1, not 0 (the "zero-gamma" trick for deep nets): at 0 each
    block starts as its shortcut, and a net this shallow then spends hundreds of steps seeing
    little beyond the stem's 3 x 3 window."""
    if len(input_shape) != 3:
        raise ValueError(f"resnet takes images of shape (C, H, W), got input shape {list(input_shape)}")
    if pool < 1:
        raise ValueError(f"resnet: pool must be >= 1, got {pool}")
    auto_width, auto_depth = resnet_size(n_classes)
    width, depth = width or auto_width, depth or auto_depth
    layers: list[nn.Module] = [
        nn.Conv2d(input_shape[0], width, 3, padding=1, bias=False),
        nn.BatchNorm2d(width),
        nn.ReLU(inplace=True),
    ]
    cin = width
    for stage, cout in enumerate((width, 2 * width, 4 * width)):
        for b in range(depth):
            layers.append(_Residual(cin, cout, stride=2 if stage > 0 and b == 0 else 1))
            cin = cout
    layers += [nn.AdaptiveAvgPool2d(pool), nn.Flatten(), nn.Dropout(dropout)]  # (B, 4 * width * pool²)
    return Classifier(nn.Sequential(*layers), nn.Linear(cin * pool * pool, n_classes))


def mlp(
    input_shape: tuple[int, ...],
    n_classes: int,
    hidden: tuple[int, ...] | list[int] = (800, 800),
    dropout: float = 0.0,
    input_dropout: float = 0.0,
) -> Classifier:
    """Fully connected ReLU net on flattened inputs: ``hidden`` gives the layer widths (the paper's
    MNIST nets are ``(1200, 1200)`` with dropout, 0.5 on hidden and 0.2 on input units as in
    Hinton et al. 2012, and ``(800, 800)`` without)."""
    layers: list[nn.Module] = [nn.Flatten()]
    if input_dropout:
        layers.append(nn.Dropout(input_dropout))
    width = math.prod(input_shape)
    for h in hidden:
        layers += [nn.Linear(width, h), nn.ReLU(inplace=True)]
        if dropout:
            layers.append(nn.Dropout(dropout))
        width = h
    return Classifier(nn.Sequential(*layers), nn.Linear(width, n_classes))


class _BagOfTokens(nn.Module):
    def __init__(self, buckets: int, dim: int):
        super().__init__()
        self.embed = nn.EmbeddingBag(buckets, dim, mode="mean", padding_idx=0)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:  # (B, L) int64, 0 = padding
        return self.embed(tokens)  # (B, dim): mean of the non-padding tokens' embeddings


def bag(
    input_shape: tuple[int, ...],
    n_classes: int,
    buckets: int = 2**18,
    dim: int = 128,
    hidden: int = 256,
    dropout: float = 0.1,
) -> Classifier:
    """fastText-style text classifier over hashed token ids (see :mod:`specens.data.text`): the mean
    of the tokens' embeddings, then one hidden layer. Inputs are int64 of shape (batch, max_tokens)."""
    if len(input_shape) != 1:
        raise ValueError(f"bag takes token-id vectors of shape (max_tokens,), got {list(input_shape)}")
    body = nn.Sequential(
        _BagOfTokens(buckets, dim),
        nn.Dropout(dropout),
        nn.Linear(dim, hidden),
        nn.ReLU(inplace=True),
        nn.Dropout(dropout),
    )
    return Classifier(body, nn.Linear(hidden, n_classes))


class _PooledNgrams(nn.Module):
    """A text's n-gram embeddings pooled as a normalised weighted bag: ``Σ w_t e_t / sqrt(Σ w_t²)``
    over its tokens t. With every ``w_t = 1`` this is the sum over the bag's L2 norm sqrt(n); with
    ``weighted``, ``w_t = exp(a_t)`` is learned per bucket (from 1), as an IDF weight down-weights
    frequent n-grams both in the sum and in the norm."""

    def __init__(self, buckets: int, dim: int, weighted: bool):
        super().__init__()
        self.embed = nn.EmbeddingBag(buckets, dim, mode="sum", padding_idx=0)
        self.log_weight = nn.Embedding(buckets, 1, _weight=torch.zeros(buckets, 1)) if weighted else None

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:  # (B, L) int64, 0 = padding
        present = (tokens > 0).float()  # (B, L)
        if self.log_weight is None:
            w = present
        else:
            w = self.log_weight(tokens).squeeze(-1).exp() * present  # (B, L)
        norm = w.square().sum(1, keepdim=True).clamp(min=1e-12).sqrt()  # (B, 1)
        return self.embed(tokens, per_sample_weights=w) / norm  # (B, dim)


def ngram(
    input_shape: tuple[int, ...],
    n_classes: int,
    buckets: int = 2**18,
    dim: int = 256,
    dropout: float = 0.3,
    weighted: bool = True,
) -> Classifier:
    """The default text generalist: a linear classifier over the pooled embeddings of hashed
    n-grams (see :mod:`specens.data.text`). The tokens' embeddings are summed with a learned
    weight per bucket and divided by the weights' L2 norm (``weighted``; without it, by the square
    root of the token count), as TF-IDF rows are IDF-weighted and normalised; dropout, then the
    linear head. Chosen on the validation splits of CLINC150 and Banking77 against a hidden layer
    (overfits), 128 dimensions (a rank-128 head for 150 classes) and unweighted pooling
    (``benchmarks/RESULTS.md``). Inputs are int64 of shape (batch, max_tokens); ``buckets`` must
    be at least the featuriser's."""
    if len(input_shape) != 1:
        raise ValueError(f"ngram takes token-id vectors of shape (max_tokens,), got {list(input_shape)}")
    body = nn.Sequential(_PooledNgrams(buckets, dim, weighted), nn.Dropout(dropout))
    return Classifier(body, nn.Linear(dim, n_classes))


def hf(input_shape: tuple[int, ...], n_classes: int, config: dict | None = None, tokenizer: str = "") -> Classifier:
    """A transformers sequence classifier (BERT type) built from its ``config.json`` dict, as
    blocks over the model's own modules: :func:`specens.generalist.hf.hf` (transformers is imported
    only when one is built). Inputs: (2, L) int64 token ids and attention mask."""
    from .hf import hf as build

    return build(input_shape, n_classes, config=config, tokenizer=tokenizer)


REGISTRY: dict[str, Callable[..., Classifier]] = {
    "resnet": resnet,
    "ngram": ngram,
    "mlp": mlp,
    "cnn": small_cnn,
    "bag": bag,
    "hf": hf,
}


def is_code(name: str) -> bool:
    """Whether a model name names code (``"package.module:callable"``) rather than a registry model."""
    return name not in REGISTRY and ":" in name


@dataclass(frozen=True)
class ModelSpec:
    """How to build a model: ``name`` is a key of :data:`REGISTRY` or ``"package.module:callable"``;
    the callable is called as ``f(input_shape, n_classes, **kwargs)`` and must return a module with
    a ``body`` and a linear ``head`` (a :class:`Classifier` does).

    Trust: a spec read from an artifact (``model.json``, ``specialist.json``) is input from
    whoever wrote the directory, so it builds only registered architectures unless the caller
    passes ``trust_code=True`` (the CLI's ``--trust-code``); a spec from the user's own config
    (training with ``model=pkg.mod:fn``) is built with ``trust_code=True``. :meth:`factory`,
    :meth:`resolved` and :meth:`build` default to refusing code.

    As JSON it is part of a record (``model.json``'s ``model``, ``specialist.json``'s
    ``model.generalist_model``), not a file of its own: :meth:`from_json` reads it."""

    name: str
    input_shape: tuple[int, ...]
    n_classes: int
    kwargs: dict[str, Any] = field(default_factory=dict)

    def factory(self, trust_code: bool = False, where: str = "") -> Callable[..., nn.Module]:
        """The callable that builds this model. ``trust_code=False`` refuses a ``module:callable``
        (nothing is imported); ``where`` names the file the spec came from in messages."""
        if self.name in REGISTRY:
            return REGISTRY[self.name]
        at = f"{where}: " if where else ""
        if ":" in self.name:
            if not trust_code:
                raise CheckpointError(
                    f"{at}model {self.name!r} names code to import, not one of the registered architectures "
                    f"{sorted(REGISTRY)}; loading it would run that code. If you trust where this directory "
                    "came from, pass --trust-code (trust_code=True)"
                )
            if where:
                warnings.warn(
                    f"{at}building model {self.name!r}, code the file names (trusted by the caller)",
                    TrustedCodeWarning,
                    stacklevel=3,
                )
            module, _, attr = self.name.partition(":")
            try:
                return getattr(importlib.import_module(module), attr)
            except (ImportError, AttributeError) as e:
                raise ConfigError(f"{at}model {self.name!r}: cannot import it ({e})") from None
        raise ConfigError(f"{at}model {self.name!r}: not one of {sorted(REGISTRY)} and not 'module:callable'")

    def resolved(self, trust_code: bool = False) -> ModelSpec:
        """This spec with the factory's defaults written into ``kwargs`` for every argument not
        given, so that a saved model keeps building the same way if a default changes later."""
        params = list(inspect.signature(self.factory(trust_code)).parameters.values())[
            2:
        ]  # after (input_shape, n_classes)
        defaults = {
            p.name: p.default
            for p in params
            if p.default is not inspect.Parameter.empty and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
        }
        return replace(self, kwargs={**defaults, **self.kwargs})

    def build(self, trust_code: bool = False, where: str = "") -> nn.Module:
        """The model, with fresh weights; see :meth:`factory` for ``trust_code`` and ``where``."""
        factory = self.factory(trust_code, where)
        at = f"{where}: " if where else ""
        try:
            model = factory(tuple(self.input_shape), self.n_classes, **self.kwargs)
        except TypeError as e:
            raise ConfigError(f"{at}model {self.name!r}: bad arguments {self.kwargs} ({e})") from None
        except (
            ValueError,
            RuntimeError,
            IndexError,
            KeyError,
            OverflowError,
            AssertionError,
        ) as e:  # refused arguments
            raise ConfigError(f"{at}model {self.name!r}: {e}") from None
        head = getattr(model, "head", None)
        if not isinstance(getattr(model, "body", None), nn.Module) or not isinstance(head, nn.Linear):
            raise ConfigError(f"{at}model {self.name!r}: must have a `body` module and a `head` nn.Linear")
        if head.out_features != self.n_classes:
            raise ConfigError(
                f"{at}model {self.name!r}: head has {head.out_features} outputs, expected {self.n_classes}"
            )
        return model

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "input_shape": list(self.input_shape),
            "n_classes": self.n_classes,
            "kwargs": self.kwargs,
        }

    @classmethod
    def from_json(cls, d: Any, where: str = "model") -> ModelSpec:
        """A spec as :meth:`to_json` wrote it: its keys as a record's are read
        (:func:`~specens.core.records.record_fields`: every one known, ``kwargs`` optional), then
        each field checked; every problem is listed in one :class:`CheckpointError` naming
        ``where`` (the file and key) and the field."""
        values = {"kwargs": {}, **record_fields(d, cls, where, optional=("kwargs",))}  # kwargs: none given
        name, shape, n, kwargs = (values[f.name] for f in fields(cls))
        problems = []
        if not (isinstance(name, str) and name):
            problems.append(f"'name' must be a non-empty string, got {name!r}")
        if not (isinstance(shape, list) and shape and all(_is_int(s) and 0 < s <= 1 << 20 for s in shape)):
            problems.append(f"'input_shape' must be a list of positive ints, got {shape!r}")
        if not (_is_int(n) and 2 <= n <= 1 << 24):
            problems.append(f"'n_classes' must be an int >= 2, got {n!r}")
        if not (isinstance(kwargs, dict) and all(isinstance(k, str) for k in kwargs)):
            problems.append(f"'kwargs' must be an object, got {kwargs!r}")
        if problems:
            raise CheckpointError(f"{where}: " + "; ".join(problems))
        return cls(name, tuple(shape), n, dict(kwargs))


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def data_defaults(name: str, n_classes: int, featurizer: Featurizer | None) -> dict[str, Any]:
    """Model arguments whose default depends on the dataset: a ``resnet``'s width and depth (from
    the class count, :func:`resnet_size`), a text model's ``buckets`` (the featuriser's) and an
    ``hf`` model's ``tokenizer`` (the fingerprint of the tokenizer that made the dataset's ids).
    Written into the saved spec, so a checkpoint never depends on these rules."""
    if name == "resnet":
        width, depth = resnet_size(n_classes)
        return {"width": width, "depth": depth}
    if name in ("ngram", "bag") and featurizer is not None and featurizer.buckets is not None:
        return {"buckets": featurizer.buckets}  # checked >= 2 where dataset.json was read
    if name == "hf" and featurizer is not None and featurizer.kind == "tokenizer":
        return {"tokenizer": featurizer.fingerprint}
    return {}


TOKEN_MODELS = ("ngram", "bag", "hf")  # registry models over token ids; the others take float tensors
MODEL_INPUT = {"uint8": "float32", "float32": "float32", "int64": "int64"}  # a dataset's dtype -> the batches'
INPUT_MEANING = {"float32": "images or feature vectors", "int64": "token ids"}


def check_input_dtype(spec: ModelSpec, data_dtype: str, model_where: str, data_where: str) -> None:
    """Refuse a dataset whose inputs are not the kind a registry model takes (token ids into a
    float model, images or floats into an embedding), before any batch; a model named as code is
    the user's own, its inputs unknown here."""
    if spec.name not in REGISTRY:
        return
    want = "int64" if spec.name in TOKEN_MODELS else "float32"
    have = MODEL_INPUT.get(data_dtype, data_dtype)
    if have != want:
        raise DataError(
            f"{model_where} (model {spec.name!r}) takes {want} inputs ({INPUT_MEANING[want]}), but {data_where} "
            f"holds input dtype {data_dtype} ({INPUT_MEANING.get(have, 'unknown')})"
        )


def default_model(input_kind: str, dtype: str) -> str:
    """The registry model that suits a dataset's inputs: images → resnet, token ids → ngram, else mlp."""
    if input_kind == "image":
        return "resnet"
    return "ngram" if dtype == "int64" else "mlp"
