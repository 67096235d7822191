"""Hugging Face transformers sequence classifiers as specens models (the ``hf`` registry family).

A transformers classifier becomes a :class:`~specens.generalist.models.Classifier` whose body is an
``nn.Sequential`` of blocks (the embeddings, each encoder layer, the pooler) and whose head is the
model's own final linear layer, so that specialists copy it as they copy any registered model
(whole copies) or own its top blocks on the frozen lower ones (a shared trunk,
:func:`specens.specialists.model.split_body`). The blocks call the model's own modules and its own
attention-mask function, and compute the same logits as the model's ``forward`` (tested).

Inputs are int64 of shape (2, L): the tokenizer's input ids and the attention mask
(:class:`specens.data.text.Tokenized`). Between blocks one float tensor (B, L, H + 1) carries the
hidden states and, in the last channel, the mask, so every block takes and returns one tensor.

Trust (docs/safety.md): this is a registered family, not a ``module:callable``. The model is
built from a config dict through transformers' own classes for the types in :data:`MODEL_TYPES`
only; a config that names code (``auto_map``), asks for remote code or for a quantisation backend
is refused before anything is built, and weights come only from safetensors or
``torch.load(weights_only=True)``. Attention is always transformers' eager implementation: the
config's own choice (``attn_implementation``, which may name a kernel to fetch from the Hub, or
``experts_implementation``) is dropped, never passed on. A config whose model is not the
bidirectional encoder the blocks compute (a decoder, cross-attention, relative positions, which
transformers 5 no longer builds) is refused rather than built as another network.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from specens.core.errors import ConfigError

MODEL_TYPES = ("bert",)  # config.model_type values built here (BERT, MiniLM, TinyBERT, ... checkpoints)
REFUSED_KEYS = ("auto_map", "trust_remote_code", "quantization_config", "custom_pipelines")
# keys that do not change the function computed: label names, provenance, the dtype to load in
# (specens computes in float32), and the attention or expert kernels (specens always uses eager)
DROPPED_KEYS = (
    *("id2label", "label2id", "architectures", "transformers_version", "_name_or_path", "name_or_path"),
    *("_commit_hash", "dtype", "torch_dtype", "use_kernels", "kernel_config"),
    *("attn_implementation", "_attn_implementation", "_attn_implementation_internal"),
    *("experts_implementation", "_experts_implementation", "_experts_implementation_internal"),
)
NOT_ENCODER = ("is_decoder", "add_cross_attention", "is_encoder_decoder")  # refused when true: not the blocks' model
# positive ints where given (num_hidden_layers also bounded: each layer's modules exist before the weights are read)
SIZES = ("vocab_size", "hidden_size", "num_attention_heads", "intermediate_size", "max_position_embeddings")
SIZES += ("type_vocab_size",)
MAX_LAYERS = 256  # num_hidden_layers at most (the largest BERT-type checkpoints have 48)


def _transformers():
    try:
        import transformers
    except ImportError:
        raise ConfigError(
            "model 'hf' needs the transformers package: pip install 'specens[hf]' (transformers and tokenizers)"
        ) from None
    return transformers


def check_hf_config(config: Any, where: str = "config") -> dict[str, Any]:
    """``config`` (a transformers ``config.json`` as a dict) checked for what this family builds:
    a dict whose ``model_type`` is in :data:`MODEL_TYPES` and that names no code; returns it without
    the keys that do not change the network (label names, provenance). One :class:`ConfigError`
    naming ``where`` and the key otherwise."""
    if not isinstance(config, dict):
        raise ConfigError(f"{where}: expected a transformers config object, got {type(config).__name__}")
    refused = [k for k in REFUSED_KEYS if k in config]
    if refused:
        raise ConfigError(
            f"{where}: {refused[0]!r} names code or a backend to load; specens builds transformers models "
            f"only from their own classes ({', '.join(MODEL_TYPES)}) and never runs a model's custom code"
        )
    model_type = config.get("model_type")
    if model_type not in MODEL_TYPES:
        raise ConfigError(
            f"{where}: model_type {model_type!r} is not one specens builds (known: {', '.join(MODEL_TYPES)}); "
            "export its predictions and use `specens cluster --predictions` instead (docs/own-generalist.md)"
        )
    for key in NOT_ENCODER:
        if config.get(key):
            raise ConfigError(f"{where}: {key!r} is true; specens builds {model_type} as a bidirectional encoder only")
    positions = config.get("position_embedding_type", "absolute")
    if positions != "absolute":
        raise ConfigError(
            f"{where}: 'position_embedding_type' {positions!r}; transformers 5 builds only absolute positions"
        )
    for key in SIZES:
        if key in config and not (_is_int(config[key]) and config[key] >= 1):
            raise ConfigError(f"{where}: {key!r} must be a positive int, got {config[key]!r}")
    layers = config.get("num_hidden_layers", 1)
    if not (_is_int(layers) and 1 <= layers <= MAX_LAYERS):
        raise ConfigError(f"{where}: 'num_hidden_layers' must be an int in [1, {MAX_LAYERS}], got {layers!r}")
    pad, vocab = config.get("pad_token_id"), config.get("vocab_size")
    if pad is not None and not (_is_int(pad) and 0 <= pad < (vocab if _is_int(vocab) else pad + 1)):
        raise ConfigError(f"{where}: 'pad_token_id' must be None or an id below vocab_size {vocab}, got {pad!r}")
    return {k: v for k, v in config.items() if k not in DROPPED_KEYS}


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def hf_config(config: dict[str, Any], n_classes: int, where: str = "config"):
    """The transformers config object for ``config`` with ``n_classes`` labels and eager attention."""
    from transformers import CONFIG_MAPPING

    checked = check_hf_config(config, where)
    values = {k: v for k, v in checked.items() if k != "model_type"}
    from transformers.activations import ACT2FN

    cfg = _refusing(where, lambda: CONFIG_MAPPING[checked["model_type"]](**values))
    if not (isinstance(cfg.hidden_act, str) and cfg.hidden_act in ACT2FN) or cfg.hidden_act == "xielu":
        # xielu: imports an optional CUDA extension and computes in bfloat16
        raise ConfigError(f"{where}: 'hidden_act' {cfg.hidden_act!r} is not an activation specens builds")
    cfg.num_labels = n_classes
    cfg._attn_implementation = "eager"  # the same numbers on every machine; no kernel is fetched
    return cfg


def hf_model(config: dict[str, Any], n_classes: int, where: str = "config") -> nn.Module:
    """The transformers sequence classifier (fresh weights) for ``config``."""
    transformers = _transformers()
    cfg = hf_config(config, n_classes, where)
    classes = {"bert": transformers.BertForSequenceClassification}
    return _refusing(where, lambda: classes[cfg.model_type](cfg))


def _refusing(where: str, build):
    """``build()``, with the errors transformers and torch raise for a value they do not take (an
    unknown ``hidden_act``, heads that do not divide the hidden size, a mistyped field) as one
    :class:`ConfigError` line naming ``where``."""
    from huggingface_hub.errors import StrictDataclassError

    try:
        return build()
    except (TypeError, ValueError, KeyError, AttributeError, RuntimeError, AssertionError, StrictDataclassError) as e:
        raise ConfigError(f"{where}: transformers does not build this config ({' '.join(str(e).split())})") from None


class _Embed(nn.Module):
    """(B, 2, L) int64 ids and mask -> (B, L, H + 1): the embeddings, the mask in the last channel."""

    def __init__(self, embeddings: nn.Module):
        super().__init__()
        self.embeddings = embeddings

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ids, mask = x[:, 0], x[:, 1]
        h = self.embeddings(input_ids=ids)
        return torch.cat([h, mask[..., None].to(h.dtype)], dim=-1)


class _Layer(nn.Module):
    """One encoder layer on (B, L, H + 1), with the attention mask the model itself would build."""

    def __init__(self, layer: nn.Module, config):
        super().__init__()
        self.layer = layer
        self._config = (config,)  # not a module: kept out of the registry

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        from transformers.masking_utils import create_bidirectional_mask

        h, mask = x[..., :-1], x[..., -1]
        attention = create_bidirectional_mask(config=self._config[0], inputs_embeds=h, attention_mask=mask.long())
        out = self.layer(h, attention_mask=attention)
        out = out[0] if isinstance(out, tuple) else out
        return torch.cat([out, x[..., -1:]], dim=-1)


class _Pool(nn.Module):
    """(B, L, H + 1) -> (B, H): the model's pooler on the first token, then its classifier dropout."""

    def __init__(self, pooler: nn.Module, dropout: nn.Module):
        super().__init__()
        self.pooler, self.dropout = pooler, dropout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.pooler(x[..., :-1]))


def as_classifier(model: nn.Module):
    """A transformers BERT-type sequence classifier as a :class:`Classifier` of blocks over the
    model's own modules (not copies): ``Classifier(x)`` equals ``model(ids, mask).logits``."""
    from .models import Classifier

    bert = model.bert
    blocks = [_Embed(bert.embeddings), *(_Layer(layer, model.config) for layer in bert.encoder.layer)]
    body = nn.Sequential(*blocks, _Pool(bert.pooler, model.dropout))
    return Classifier(body, model.classifier)


def hf(input_shape: tuple[int, ...], n_classes: int, config: dict | None = None, tokenizer: str = ""):
    """The ``hf`` registry model: a transformers sequence classifier built from ``config`` (a
    ``config.json`` dict of a type in :data:`MODEL_TYPES`), as a :class:`Classifier` of blocks.
    ``tokenizer`` is the fingerprint of the tokenizer its inputs come from (checked against the
    dataset's, :func:`check_tokenizer`); it does not change the network. Inputs are int64 of shape
    (2, L), L at most the config's ``max_position_embeddings``."""
    if config is None:
        raise ValueError("model 'hf' needs model_kwargs.config: a transformers config.json as an object")
    if len(input_shape) != 2 or input_shape[0] != 2:
        raise ValueError(
            f"hf takes (2, max_length) int64 inputs (ids and attention mask: `specens data ... --tokenizer`), "
            f"got input shape {list(input_shape)}"
        )
    model = hf_model(config, n_classes, "model_kwargs.config")
    positions = getattr(model.config, "max_position_embeddings", None)
    if positions is not None and input_shape[1] > positions:
        raise ValueError(f"inputs of {input_shape[1]} tokens, but the model has {positions} positions")
    return as_classifier(model)


def check_tokenizer(spec, featurizer, model_where: str, data_where: str) -> None:
    """Refuse a dataset whose token ids come from another tokenizer than the ``hf`` model's
    (``spec.kwargs['tokenizer']`` against ``dataset.json``'s ``featurizer.fingerprint``), and a
    vocabulary larger than the model's embedding table."""
    from specens.core.errors import DataError

    if spec.name != "hf":
        return
    want = str(spec.kwargs.get("tokenizer") or "")
    have = featurizer.fingerprint if featurizer is not None else None
    if featurizer is None or featurizer.kind != "tokenizer":
        raise DataError(
            f"{data_where} was not tokenized for a transformers model ({model_where} reads the token ids of "
            "tokenizer " + (want[:12] or "unknown") + "): import it with `specens data ... --tokenizer MODEL_DIR`"
        )
    if not want:
        raise DataError(
            f"{model_where} records no tokenizer fingerprint (model_kwargs.tokenizer), so nothing says "
            f"{data_where}'s ids are the ones it reads: import the model with `specens generalist import --hf`"
        )
    if have != want:
        raise DataError(
            f"{data_where} was tokenized by tokenizer {str(have)[:12]}, but {model_where} reads tokenizer "
            f"{want[:12]}'s ids: import the data with the model's own tokenizer (--tokenizer MODEL_DIR)"
        )
    config = spec.kwargs.get("config")
    vocab = config.get("vocab_size") if isinstance(config, dict) else None
    size = featurizer.vocab_size
    if _is_int(vocab) and vocab >= 1 and _is_int(size) and size > vocab:
        raise DataError(f"{data_where}: the tokenizer has {size} ids, {model_where}'s embeddings {vocab}")
