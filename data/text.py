"""The project's text featuriser: hashed word and character n-grams.

A text becomes a fixed-length int64 vector of token ids (0 = padding) that the text models (an
``EmbeddingBag``) pool. Nothing is fitted and nothing is downloaded: the ids are a stable hash
(BLAKE2b) of each n-gram, so the same text gives the same ids on every machine and for texts never
seen at import time. The settings are stored in ``dataset.json`` under ``featurizer``.

Tokens of ``"Freeze my card"`` with the defaults: the words ``freeze my card``, the word bigrams
``freeze_my my_card``, then, word by word, the character n-grams of orders 2 to 5 of the word padded
with ``<`` and ``>`` (``<f fr re … <fr fre … ze>``), each distinct token once (binary term
frequency, as a sublinear TF-IDF nearly is on short texts), truncated to ``max_tokens``. These are
the features of the TF-IDF + logistic-regression baseline (word 1-2 and ``char_wb`` 2-5 grams),
hashed instead of counted into a fitted vocabulary.

Not scikit-learn's ``HashingVectorizer``: it returns a sparse count matrix rather than the ordered
id vector the ``EmbeddingBag`` models take, and its MurmurHash3 ids differ from these BLAKE2b ones,
so every imported text dataset (and every figure recorded on one) would change.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from specens.core.errors import DataError

from .format import Featurizer

_WORD = re.compile(r"\w+|[^\w\s]")


@dataclass(frozen=True)
class HashedNgrams:
    buckets: int = 2**18  # token ids are 1 .. buckets-1; 0 is padding
    max_tokens: int = 512  # vector length: longer token lists are truncated, shorter ones padded
    word_ngrams: int = 2  # word n-grams of order 1 .. word_ngrams
    char_ngrams: int = 5  # character n-grams of orders char_min .. char_ngrams within each word (0: none)
    char_min: int = 2
    unique: bool = True  # each distinct token once; False keeps repeats (term counts)

    def __post_init__(self) -> None:
        """Checked against the record ``dataset.json`` stores it as (:class:`Featurizer`), so the
        bounds are written once."""
        unset = [k for k, v in asdict(self).items() if v is None]
        if unset:
            raise ValueError(f"HashedNgrams: {', '.join(unset)} must be set, got None")
        try:
            Featurizer.from_json(self.to_json(), "HashedNgrams")
        except DataError as e:
            raise ValueError(str(e)) from None

    def tokens(self, text: str) -> list[str]:
        words = _WORD.findall(text.lower())
        out = list(words)
        for n in range(2, self.word_ngrams + 1):
            out += ["_".join(words[i : i + n]) for i in range(len(words) - n + 1)]
        if self.char_ngrams:
            for w in words:
                w = f"<{w}>"
                for n in range(self.char_min, self.char_ngrams + 1):
                    out += ["#" + w[i : i + n] for i in range(len(w) - n + 1)]
        return list(dict.fromkeys(out)) if self.unique else out

    def __call__(self, text: str) -> np.ndarray:
        """Token ids of ``text``: int64 array of shape (max_tokens,)."""
        ids = np.zeros(self.max_tokens, dtype=np.int64)
        for i, tok in enumerate(self.tokens(text)[: self.max_tokens]):
            h = int.from_bytes(hashlib.blake2b(tok.encode(), digest_size=8).digest(), "little")
            ids[i] = 1 + h % (self.buckets - 1)
        return ids

    def to_json(self) -> dict[str, Any]:
        return {"kind": "hashed-ngrams", **asdict(self)}

    @classmethod
    def from_json(cls, d: Any) -> HashedNgrams:
        """The featuriser ``dataset.json`` describes (:class:`~specens.data.format.Featurizer`):
        its kind and every setting (one written before a setting existed is refused, naming it)."""
        kind = d["kind"] if isinstance(d, dict) and "kind" in d else None
        if kind != "hashed-ngrams":
            raise ValueError(f"featurizer kind {kind!r}: expected 'hashed-ngrams'")
        f = Featurizer.from_json(d, "featurizer")
        names = list(asdict(cls()))
        missing = [k for k in names if getattr(f, k) is None]
        if missing:
            raise ValueError(f"featurizer: missing settings {missing}")
        return cls(**{k: getattr(f, k) for k in names})


DEFAULT_MAX_LENGTH = 64  # tokens per text for a transformers model; intents and titles are shorter


class Tokenized:
    """A transformers model's own tokenizer as a featuriser: a text becomes an int64 array of
    shape (2, ``max_length``), the input ids (truncated, padded with the pad id) and the attention
    mask, which the ``hf`` models read (:mod:`specens.generalist.hf`).

    Read from ``MODEL_DIR/tokenizer.json`` by the ``tokenizers`` library (a JSON file: nothing is
    imported or run), never from a hub. Its ``fingerprint`` (the file's SHA-256) is stored in
    ``dataset.json`` and in a model trained or imported on the data, and every stage that reads both
    checks they agree (:func:`specens.generalist.hf.check_tokenizer`)."""

    def __init__(self, model_dir: str, max_length: int = DEFAULT_MAX_LENGTH):
        from pathlib import Path

        from specens.core.errors import DataError
        from specens.core.io import fingerprint

        path = Path(model_dir) / "tokenizer.json"
        if not path.is_file():
            raise DataError(
                f"{path}: no such file; --tokenizer needs a model directory holding a fast tokenizer's "
                "tokenizer.json (transformers' AutoTokenizer.save_pretrained writes one)"
            )
        if not 2 <= max_length <= 8192:
            raise DataError(f"--max-length must be in [2, 8192], got {max_length}")
        try:
            from tokenizers import Tokenizer
        except ImportError:
            raise DataError("--tokenizer needs the tokenizers package: pip install 'specens[hf]'") from None
        try:
            self._tokenizer = Tokenizer.from_file(str(path))
        except Exception as e:  # the library's own parse errors (a Rust panic message, ValueError, ...)
            raise DataError(f"{path}: not a tokenizer the tokenizers library reads ({str(e)[:200]})") from None
        if any(self._tokenizer.encode("a").type_ids):  # the hf blocks read token type 0, as the model does without them
            raise DataError(
                f"{path}: gives a single text token type ids other than 0, which specens does not store "
                "(it stores the ids and the attention mask)"
            )
        self.max_length = max_length
        self.pad_token_id = _pad_id(self._tokenizer, Path(model_dir))
        self.fingerprint = fingerprint(path)
        self.vocab_size = self._tokenizer.get_vocab_size(with_added_tokens=True)
        self.source = str(model_dir)
        self._tokenizer.no_padding()
        self._tokenizer.enable_truncation(max_length)

    @property
    def shape(self) -> tuple[int, ...]:
        return (2, self.max_length)

    def __call__(self, text: str) -> np.ndarray:
        """(2, max_length) int64: ids padded with the pad id, and the attention mask."""
        ids = self._tokenizer.encode(text).ids[: self.max_length]
        out = np.zeros((2, self.max_length), dtype=np.int64)
        out[0] = self.pad_token_id
        out[0, : len(ids)] = ids
        out[1, : len(ids)] = 1
        return out

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": "tokenizer",
            "fingerprint": self.fingerprint,
            "max_length": self.max_length,
            "pad_token_id": self.pad_token_id,
            "vocab_size": self.vocab_size,
            "source": self.source,
        }


def _pad_id(tokenizer, model_dir) -> int:
    """The pad token's id: tokenizer_config.json's ``pad_token``, else the tokenizer's padding
    setting, else config.json's ``pad_token_id``, else 0 (BERT's). A file that is missing or not
    JSON is passed over (it only names the pad token; masked positions never reach the logits)."""
    from specens.core.errors import CheckpointError
    from specens.core.io import read_json

    def field(name: str, key: str):
        try:
            data = read_json(model_dir / name)
        except (CheckpointError, OSError):
            return None
        return data.get(key) if isinstance(data, dict) else None

    for name in ("tokenizer_config.json", "special_tokens_map.json"):
        token = field(name, "pad_token")
        token = token.get("content") if isinstance(token, dict) else token
        if isinstance(token, str) and tokenizer.token_to_id(token) is not None:
            return tokenizer.token_to_id(token)
    if tokenizer.padding and isinstance(tokenizer.padding.get("pad_id"), int):
        return tokenizer.padding["pad_id"]
    pad = field("config.json", "pad_token_id")
    return pad if isinstance(pad, int) and not isinstance(pad, bool) and pad >= 0 else 0
