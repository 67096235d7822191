"""The project's text featuriser: hashed word and character n-grams, fastText style.

A text becomes a fixed-length int64 vector of token ids (0 = padding) that the ``bag`` model
(an ``EmbeddingBag``) averages. Nothing is fitted and nothing is downloaded: the ids are a stable
hash (BLAKE2b) of each n-gram, so the same text gives the same ids on every machine and for texts
never seen at import time. The settings are stored in ``dataset.json`` under ``featurizer``.

Tokens of ``"Freeze my card"`` with the defaults: the words ``freeze my card``, the word bigrams
``freeze_my my_card``, and the character trigrams of each word padded with ``<`` and ``>``
(``<fr fre ree eez eze ze> …``), in that order, truncated to ``max_tokens``.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import asdict, dataclass

import numpy as np

_WORD = re.compile(r"\w+|[^\w\s]")


@dataclass(frozen=True)
class HashedNgrams:
    buckets: int = 2**18  # token ids are 1 .. buckets-1; 0 is padding
    max_tokens: int = 96  # vector length: longer texts are truncated, shorter ones padded
    word_ngrams: int = 2  # word n-grams of order 1 .. word_ngrams
    char_ngrams: int = 3  # character n-grams of this order within each word (0: none)

    def tokens(self, text: str) -> list[str]:
        words = _WORD.findall(text.lower())
        out = list(words)
        for n in range(2, self.word_ngrams + 1):
            out += ["_".join(words[i:i + n]) for i in range(len(words) - n + 1)]
        if self.char_ngrams:
            n = self.char_ngrams
            for w in words:
                w = f"<{w}>"
                out += ["#" + w[i:i + n] for i in range(len(w) - n + 1)]
        return out

    def __call__(self, text: str) -> np.ndarray:
        """Token ids of ``text``: int64 array of shape (max_tokens,)."""
        ids = np.zeros(self.max_tokens, dtype=np.int64)
        for i, tok in enumerate(self.tokens(text)[: self.max_tokens]):
            h = int.from_bytes(hashlib.blake2b(tok.encode(), digest_size=8).digest(), "little")
            ids[i] = 1 + h % (self.buckets - 1)
        return ids

    def to_json(self) -> dict:
        return {"kind": "hashed-ngrams", **asdict(self)}
