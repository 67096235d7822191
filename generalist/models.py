"""Classifier architectures. Every model is a :class:`Classifier`: a ``body`` that maps inputs to
features and one final linear ``head``, because specialists copy the body and rows of the head
(METHOD §4, initialisation).

Models are built from a :class:`ModelSpec` (a registry name or a user's ``module:callable``, plus
keyword arguments), which checkpoints store so that they can rebuild the model without pickles.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any, Callable

import torch
from torch import nn


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


def small_cnn(input_shape: tuple[int, ...], n_classes: int, width: int = 64, hidden: int = 512,
              dropout: float = 0.2) -> Classifier:
    """Three conv blocks (width, 2*width, 4*width channels; each conv-BN-ReLU twice, then pooled)
    and a hidden layer of ``hidden`` units. For images of shape (channels, H, W)."""
    if len(input_shape) != 3:
        raise ValueError(f"small_cnn takes images of shape (C, H, W), got input shape {list(input_shape)}")
    c = input_shape[0]

    def block(cin: int, cout: int) -> list[nn.Module]:
        return [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
                nn.Conv2d(cout, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]

    body = nn.Sequential(
        *block(c, width), nn.MaxPool2d(2),
        *block(width, 2 * width), nn.MaxPool2d(2),
        *block(2 * width, 4 * width), nn.AdaptiveAvgPool2d(2),  # (B, 4w, 2, 2) for any input size
        nn.Flatten(), nn.Dropout(dropout),
        nn.Linear(16 * width, hidden), nn.ReLU(inplace=True), nn.Dropout(dropout),
    )
    return Classifier(body, nn.Linear(hidden, n_classes))


def mlp(input_shape: tuple[int, ...], n_classes: int, hidden: tuple[int, ...] | list[int] = (800, 800),
        dropout: float = 0.0, input_dropout: float = 0.0) -> Classifier:
    """Fully connected ReLU net on flattened inputs: ``hidden`` gives the layer widths (the paper's
    MNIST nets are ``(1200, 1200)`` with dropout, 0.5 on hidden and 0.2 on input units as in
    Hinton et al. 2012, and ``(800, 800)`` without)."""
    layers: list[nn.Module] = [nn.Flatten()]
    if input_dropout:
        layers.append(nn.Dropout(input_dropout))
    width = int(torch.tensor(input_shape).prod())
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


def bag(input_shape: tuple[int, ...], n_classes: int, buckets: int = 2**18, dim: int = 128,
        hidden: int = 256, dropout: float = 0.1) -> Classifier:
    """fastText-style text classifier over hashed token ids (see :mod:`specens.data.text`): the mean
    of the tokens' embeddings, then one hidden layer. Inputs are int64 of shape (batch, max_tokens)."""
    if len(input_shape) != 1:
        raise ValueError(f"bag takes token-id vectors of shape (max_tokens,), got {list(input_shape)}")
    body = nn.Sequential(_BagOfTokens(buckets, dim), nn.Dropout(dropout), nn.Linear(dim, hidden),
                         nn.ReLU(inplace=True), nn.Dropout(dropout))
    return Classifier(body, nn.Linear(hidden, n_classes))


REGISTRY: dict[str, Callable[..., Classifier]] = {"cnn": small_cnn, "mlp": mlp, "bag": bag}


@dataclass(frozen=True)
class ModelSpec:
    """How to build a model: ``name`` is a key of :data:`REGISTRY` or ``"package.module:callable"``;
    the callable is called as ``f(input_shape, n_classes, **kwargs)`` and must return a module with
    a ``body`` and a linear ``head`` (a :class:`Classifier` does)."""

    name: str
    input_shape: tuple[int, ...]
    n_classes: int
    kwargs: dict[str, Any] = field(default_factory=dict)

    def build(self) -> nn.Module:
        if self.name in REGISTRY:
            factory = REGISTRY[self.name]
        elif ":" in self.name:
            module, _, attr = self.name.partition(":")
            try:
                factory = getattr(importlib.import_module(module), attr)
            except (ImportError, AttributeError) as e:
                raise ValueError(f"model {self.name!r}: cannot import it ({e})") from None
        else:
            raise ValueError(f"model {self.name!r}: not one of {sorted(REGISTRY)} and not 'module:callable'")
        try:
            model = factory(tuple(self.input_shape), self.n_classes, **self.kwargs)
        except TypeError as e:
            raise ValueError(f"model {self.name!r}: bad arguments {self.kwargs} ({e})") from None
        head = getattr(model, "head", None)
        if not isinstance(getattr(model, "body", None), nn.Module) or not isinstance(head, nn.Linear):
            raise ValueError(f"model {self.name!r}: must have a `body` module and a `head` nn.Linear")
        if head.out_features != self.n_classes:
            raise ValueError(f"model {self.name!r}: head has {head.out_features} outputs, expected {self.n_classes}")
        return model

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "input_shape": list(self.input_shape), "n_classes": self.n_classes,
                "kwargs": self.kwargs}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> "ModelSpec":
        return cls(d["name"], tuple(d["input_shape"]), int(d["n_classes"]), dict(d.get("kwargs") or {}))


def default_model(input_kind: str, dtype: str) -> str:
    """The registry model that suits a dataset's inputs: images → cnn, token ids → bag, else mlp."""
    if input_kind == "image":
        return "cnn"
    return "bag" if dtype == "int64" else "mlp"
