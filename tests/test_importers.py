"""Importers: the real datasets from their original files, and users' own layouts."""

import hashlib
import numpy as np
import pytest
from PIL import Image

from specens.core.errors import DataError
from specens.data.format import load_info
from specens.data.importers import import_arrays, import_banking77, import_clinc150, import_folder, import_idx, MNIST_CLASSES
from specens.data.shards import iter_split
from specens.data.text import FORMER_DEFAULT, HashedNgrams


def test_featurizer_is_stable_and_padded():
    f = HashedNgrams(buckets=1000, max_tokens=40)
    a = f("Freeze my card, please!")
    assert a.dtype == np.int64 and a.shape == (40,)
    assert np.array_equal(a, HashedNgrams(buckets=1000, max_tokens=40)("freeze MY card, please!"))  # lower-cased
    toks = f.tokens("Freeze my card")
    assert toks[:5] == ["freeze", "my", "card", "freeze_my", "my_card"]
    assert toks[5:9] == ["#<f", "#fr", "#re", "#ee"] and "#<freez" not in toks and "#<free" in toks  # orders 2-5
    assert len(toks) == len(set(toks))  # each distinct token once ("ee" and "e>" of "freeze" appear once)
    n = len(f.tokens("Freeze my card, please!"))
    assert (a[:n] > 0).all() and (a[n:] == 0).all() and a.max() < 1000
    # Pinned ids: the hash must never change, or stored datasets stop matching new text.
    assert HashedNgrams()("hello")[:3].tolist() == [94504, 34498, 156638]
    assert HashedNgrams(buckets=2**18)("hello")[0] == 1 + int.from_bytes(
        hashlib.blake2b(b"hello", digest_size=8).digest(), "little") % (2**18 - 1)


def test_featurizer_settings_of_an_older_dataset_json_give_its_ids():
    """dataset.json written before char_min / unique existed: one character order, repeats kept."""
    old = {"kind": "hashed-ngrams", "buckets": 2**18, "max_tokens": 96, "word_ngrams": 2, "char_ngrams": 3}
    f = HashedNgrams.from_json(old)
    assert f == FORMER_DEFAULT
    assert f("hello")[:3].tolist() == [94504, 12496, 230202]  # the ids the former default wrote
    assert f.tokens("no no")[:3] == ["no", "no", "no_no"]
    assert HashedNgrams.from_json(HashedNgrams(max_tokens=7).to_json()) == HashedNgrams(max_tokens=7)
    with pytest.raises(ValueError, match="featurizer kind 'tfidf'"):
        HashedNgrams.from_json({"kind": "tfidf"})
    with pytest.raises(ValueError, match="char_min must be in"):
        HashedNgrams(char_min=6)


def test_clinc150(shared_data, tmp_path):
    import_clinc150(str(shared_data / "clinc150"), str(tmp_path))
    info = load_info(tmp_path)
    assert info.n_classes == 150 and len(info.groups) == 10 and all(len(g) == 15 for g in info.groups)
    assert {k: s.num_samples for k, s in info.splits.items()} == {"train": 15000, "val": 3000, "test": 4500}
    assert info.featurizer["kind"] == "hashed-ngrams"
    assert "banking" in info.group_names


def test_banking77(shared_data, tmp_path):
    import_banking77(str(shared_data / "banking77"), str(tmp_path))
    info = load_info(tmp_path)
    assert info.n_classes == 77 and info.groups is None
    s = {k: v.num_samples for k, v in info.splits.items()}
    assert s["train"] + s["val"] == 10003 and s["test"] == 3080 and 950 <= s["val"] <= 1050
    assert min(info.split("val").class_counts) > 0


def test_mnist(shared_data, tmp_path):
    import_idx(str(shared_data / "mnist"), str(tmp_path), "mnist", MNIST_CLASSES, val_size=5000)
    info = load_info(tmp_path)
    assert {k: s.num_samples for k, s in info.splits.items()} == {"train": 55000, "val": 5000, "test": 10000}
    assert info.input.shape == (1, 28, 28)
    assert list(info.split("test").class_counts) == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


def test_image_folder(tmp_path):
    rng = np.random.default_rng(0)
    for c in ("cat", "dog"):
        (tmp_path / "src" / c).mkdir(parents=True)
        for i in range(10):
            Image.fromarray(rng.integers(0, 255, (12, 12, 3), dtype=np.uint8)).save(tmp_path / "src" / c / f"{i}.png")
    import_folder(str(tmp_path / "src"), str(tmp_path / "out"), size=8, val_fraction=0.2, test_fraction=0.2)
    info = load_info(tmp_path / "out")
    assert info.classes == ("cat", "dog") and info.input.shape == (3, 8, 8)
    assert {k: s.num_samples for k, s in info.splits.items()} == {"train": 12, "val": 4, "test": 4}
    Image.fromarray(np.zeros((5, 5, 3), np.uint8)).save(tmp_path / "src" / "dog" / "odd.png")
    with pytest.raises(DataError, match=r"odd.png: image is \[3, 5, 5\], others are \[3, 12, 12\]"):
        import_folder(str(tmp_path / "src"), str(tmp_path / "out2"))


def test_numpy_arrays(tmp_path):
    x = np.random.default_rng(0).normal(size=(50, 4)).astype(np.float64)
    y = np.arange(50) % 5
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "y.npy", y)
    import_arrays(str(tmp_path / "x.npy"), str(tmp_path / "y.npy"), str(tmp_path / "out"))
    info = load_info(tmp_path / "out")
    assert info.n_classes == 5 and info.input.dtype == "float32"
    total = sum(b.inputs.shape[0] for s in ("train", "val", "test") for b in iter_split(str(tmp_path / "out"), s))
    assert total == 50
    x[3, 1] = np.nan
    np.save(tmp_path / "x.npy", x)
    with pytest.raises(DataError, match="x.npy: row 3 has non-finite values"):
        import_arrays(str(tmp_path / "x.npy"), str(tmp_path / "y.npy"), str(tmp_path / "out2"))
