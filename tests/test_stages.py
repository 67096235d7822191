"""The stream's stages (specens.data.stages), each alone on hand-made samples."""

import io
import random

import numpy as np
import pytest

from specens.core.errors import DataError
from specens.data.format import InputSpec
from specens.data.stages import (
    ErrorPolicy,
    batched,
    checked_count,
    decoded,
    keep_fraction,
    keep_labels,
    key_fraction,
    shuffled,
)

SPEC = InputSpec("array", (3,), "float32")


def _raw(key, label, x=None):
    buf = io.BytesIO()
    np.save(buf, np.asarray(x if x is not None else [label, 0, 0], dtype=np.float32))
    return {"__key__": key, "__url__": "s.tar", "cls": str(label).encode(), SPEC.field: buf.getvalue()}


def test_error_policy_raises_or_counts():
    with pytest.raises(DataError, match="bad"):
        ErrorPolicy("raise")(DataError("bad"))
    errors = ErrorPolicy("skip")
    errors(DataError("bad"))
    errors(DataError("short"), 3)
    assert (errors.pending, errors.total) == (4, 4)
    assert errors.take() == 4 and errors.pending == 0 and errors.total == 4
    with pytest.raises(ValueError, match="on_error"):
        ErrorPolicy("ignore")


def test_checked_count_names_a_short_shard_or_counts_its_shortfall():
    raw = [_raw(f"k{i}", 0) for i in range(3)]
    assert list(checked_count(iter(raw), "s.tar", 3, ErrorPolicy())) == raw
    with pytest.raises(DataError, match=r"s.tar: holds 3 samples but dataset.json lists 5"):
        list(checked_count(iter(raw), "s.tar", 5, ErrorPolicy()))
    errors = ErrorPolicy("skip")
    assert list(checked_count(iter(raw), "s.tar", 5, errors)) == raw and errors.total == 2


def test_filters_keep_the_labels_and_the_key_fraction():
    raw = [_raw(f"k{i}", i % 4) for i in range(200)]
    keep = np.array([False, True, False, True])
    kept = list(keep_labels(iter(raw), keep))
    assert [int(s["cls"]) for s in kept] == [i % 4 for i in range(200) if i % 4 in (1, 3)]
    odd = [{**raw[0], "cls": b"x"}, {**raw[0], "cls": b"9"}, {k: v for k, v in raw[0].items() if k != "cls"}]
    assert list(keep_labels(iter(odd), keep)) == odd  # left for decoded to report
    frac = list(keep_fraction(iter(raw), 0.25))
    assert [s["__key__"] for s in frac] == [s["__key__"] for s in raw if key_fraction(s["__key__"]) < 0.25]
    assert 30 < len(frac) < 70


def test_decoded_sends_bad_samples_to_the_policy():
    raw = [_raw("a", 1), _raw("b", 7), _raw("c", 2)]
    with pytest.raises(DataError, match=r"s.tar: sample 'b': label 7 outside"):
        list(decoded(iter(raw), SPEC, 3, ErrorPolicy()))
    errors = ErrorPolicy("skip")
    out = list(decoded(iter(raw), SPEC, 3, errors))
    assert [(k, y) for k, _, y in out] == [("a", 1), ("c", 2)] and errors.total == 1
    np.testing.assert_array_equal(out[0][1], np.float32([1, 0, 0]))


def test_shuffled_is_a_seeded_permutation_that_draws_no_more_than_asked():
    items = [(str(i), None, i) for i in range(50)]
    drawn = []

    def source():
        for it in items:
            drawn.append(it)
            yield it

    out = list(shuffled(source(), random.Random(0), 50, buffer=8))
    assert sorted(out, key=lambda t: t[2]) == items and out != items
    assert out == list(shuffled(iter(items), random.Random(0), 50, buffer=8))
    drawn.clear()
    assert len(list(shuffled(source(), random.Random(0), 20, buffer=8))) == 20 and len(drawn) == 20


def test_batched_reports_each_skip_once_and_a_trailing_one_alone():
    errors = ErrorPolicy("skip")

    def samples():
        for i in range(5):
            if i in (1, 4):
                errors(DataError("bad"))
            yield (f"k{i}", np.zeros(3, np.float32), i)
        errors(DataError("bad"))

    batches = list(batched(samples(), 2, errors))
    assert [b.keys for b in batches] == [["k0", "k1"], ["k2", "k3"], ["k4"]]
    assert [b.skipped for b in batches] == [1, 0, 2]
    assert batches[0].labels.tolist() == [0, 1] and batches[0].inputs.shape == (2, 3)
    errors = ErrorPolicy("skip")

    def only_bad():
        errors(DataError("bad"))
        yield from ()

    (empty,) = batched(only_bad(), 4, errors)
    assert len(empty) == 0 and empty.skipped == 1
