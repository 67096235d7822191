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
        problems = []
        if self.buckets < 2:
            problems.append(f"buckets must be >= 2, got {self.buckets}")
        if self.max_tokens < 1:
            problems.append(f"max_tokens must be >= 1, got {self.max_tokens}")
        if self.word_ngrams < 1:
            problems.append(f"word_ngrams must be >= 1, got {self.word_ngrams}")
        if self.char_ngrams and not 1 <= self.char_min <= self.char_ngrams:
            problems.append(f"char_min must be in [1, char_ngrams={self.char_ngrams}], got {self.char_min}")
        if problems:
            raise ValueError("HashedNgrams: " + "; ".join(problems))

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
    def from_json(cls, d: dict[str, Any]) -> HashedNgrams:
        """The featuriser ``dataset.json`` describes: its kind and every setting, no other key."""
        if d.get("kind") != "hashed-ngrams":
            raise ValueError(f"featurizer kind {d.get('kind')!r}: expected 'hashed-ngrams'")
        names = set(asdict(cls()))
        missing, extra = sorted(names - set(d)), sorted(set(d) - names - {"kind"})
        if missing or extra:
            raise ValueError(f"featurizer: missing settings {missing}, unknown {extra}")
        return cls(**{k: d[k] for k in names})
