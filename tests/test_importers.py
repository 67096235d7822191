"""Importers: the real datasets from their original files, and users' own layouts."""

import hashlib

import numpy as np
import pytest
from PIL import Image

from specens.core.errors import DataError
from specens.data.format import load_info
from specens.data.importers import (
    MNIST_CLASSES,
    import_arrays,
    import_banking77,
    import_clinc150,
    import_folder,
    import_idx,
)
from specens.data.shards import iter_split
from specens.data.tables import import_text
from specens.data.text import HashedNgrams


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
        hashlib.blake2b(b"hello", digest_size=8).digest(), "little"
    ) % (2**18 - 1)


def test_featurizer_settings_give_their_ids_and_an_older_description_is_refused():
    """The former default (one character order, repeats kept) keeps its ids; a dataset.json written
    before char_min / unique existed is refused, naming what it lacks."""
    old = {"kind": "hashed-ngrams", "buckets": 2**18, "max_tokens": 96, "word_ngrams": 2, "char_ngrams": 3}
    with pytest.raises(ValueError, match=r"missing settings \['char_min', 'unique'\]"):
        HashedNgrams.from_json(old)
    f = HashedNgrams(max_tokens=96, char_ngrams=3, char_min=3, unique=False)
    assert f("hello")[:3].tolist() == [94504, 12496, 230202]  # the ids the former default wrote
    assert f.tokens("no no")[:3] == ["no", "no", "no_no"]
    assert HashedNgrams.from_json(HashedNgrams(max_tokens=7).to_json()) == HashedNgrams(max_tokens=7)
    with pytest.raises(ValueError, match="featurizer kind 'tfidf'"):
        HashedNgrams.from_json({"kind": "tfidf"})
    with pytest.raises(ValueError, match="char_min must be in"):
        HashedNgrams(char_min=6)
    with pytest.raises(ValueError, match="max_tokens must be set"):  # dataset.json's record allows null; this does not
        HashedNgrams(max_tokens=None)


@pytest.mark.slow
def test_clinc150(shared_data, tmp_path):
    import_clinc150(str(shared_data / "clinc150"), str(tmp_path))
    info = load_info(tmp_path)
    assert info.n_classes == 150 and len(info.groups) == 10 and all(len(g) == 15 for g in info.groups)
    assert {k: s.num_samples for k, s in info.splits.items()} == {"train": 15000, "val": 3000, "test": 4500}
    assert info.featurizer.kind == "hashed-ngrams"
    assert "banking" in info.group_names


@pytest.mark.slow
def test_banking77(shared_data, tmp_path):
    import_banking77(str(shared_data / "banking77"), str(tmp_path))
    info = load_info(tmp_path)
    assert info.n_classes == 77 and info.groups is None
    s = {k: v.num_samples for k, v in info.splits.items()}
    assert s["train"] + s["val"] == 10003 and s["test"] == 3080 and 950 <= s["val"] <= 1050
    assert min(info.split("val").class_counts) > 0


@pytest.mark.slow
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


# ----------------------------------------------------------------------------- specens data text

_WORDS = {
    "card_lost": ("lost", "card", "cards"),
    "card_frozen": ("frozen", "card", "block"),
    "pay_late": ("late", "payment", "bill"),
    "pay_twice": ("twice", "payment", "charged"),
}
_GROUP = {"card_lost": "cards", "card_frozen": "cards", "pay_late": "payments", "pay_twice": "payments"}


def _examples(n_per_class: int, offset: int = 0) -> list[dict]:
    return [
        {"text": f"my {w[0]} {w[1 + i % 2]} number {i + offset}", "intent": lab, "domain": _GROUP[lab]}
        for i in range(n_per_class)
        for lab, w in _WORDS.items()
    ]


def _write(path, rows, fmt=None):
    import csv
    import json

    fmt = fmt or path.suffix
    if fmt == ".jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    else:
        with open(path, "w", newline="") as f:
            w = csv.DictWriter(f, list(rows[0]), delimiter="\t" if fmt == ".tsv" else ",")
            w.writeheader()
            w.writerows(rows)
    return path


def _decoded(root, split):
    return [
        (k, x.tolist(), int(y))
        for b in iter_split(str(root), split)
        for k, x, y in zip(b.keys, b.inputs, b.labels, strict=True)
    ]


def test_text_tables_in_every_format_give_one_dataset(tmp_path):
    """One CSV carved into stratified, seeded splits, with a group column; the same rows as TSV or
    JSON Lines give identical shards; the inputs are the featuriser's ids of the texts."""
    rows = _examples(10)
    f = HashedNgrams(buckets=1000, max_tokens=32)
    outs = {}
    for fmt in (".csv", ".tsv", ".jsonl"):
        src = _write(tmp_path / f"intents{fmt}", rows)
        outs[fmt] = tmp_path / fmt[1:]
        import_text(
            str(src),
            str(outs[fmt]),
            label="intent",
            group="domain",
            featurizer=f,
            val_fraction=0.2,
            test_fraction=0.2,
            seed=3,
        )
    info = load_info(outs[".csv"])
    assert info.classes == ("card_frozen", "card_lost", "pay_late", "pay_twice")
    assert info.group_names == ("cards", "payments") and [list(g) for g in info.groups] == [[0, 1], [2, 3]]
    assert {k: list(v.class_counts) for k, v in info.splits.items()} == {
        "train": [6] * 4,
        "val": [2] * 4,
        "test": [2] * 4,
    }  # stratified
    assert info.featurizer.to_json() == f.to_json() and info.source["importer"] == "text"
    for split in ("train", "val", "test"):
        got = _decoded(outs[".csv"], split)
        assert got == _decoded(outs[".tsv"], split) == _decoded(outs[".jsonl"], split)
    texts = {r["text"]: info.classes.index(r["intent"]) for r in rows}
    for _, ids, y in _decoded(outs[".csv"], "test"):
        match = [t for t in texts if f(t).tolist() == ids]
        assert len(match) == 1 and texts[match[0]] == y
    other = tmp_path / "other_seed"
    import_text(
        str(tmp_path / "intents.csv"),
        str(other),
        label="intent",
        featurizer=f,
        val_fraction=0.2,
        test_fraction=0.2,
        seed=4,
    )
    assert _decoded(other, "test") != _decoded(outs[".csv"], "test") and load_info(other).groups is None


def test_text_tables_from_separate_files(tmp_path):
    """Train / val / test files; integer labels (JSON Lines numbers) order numerically; a val file
    with a test fraction of 0 leaves no test split."""

    def numbered(rows):
        number = {"card_lost": 10, "card_frozen": 2, "pay_late": 3, "pay_twice": 4}
        return [{"utterance": r["text"], "y": number[r["intent"]]} for r in rows]

    train = _write(tmp_path / "train.jsonl", numbered(_examples(6)))
    val = _write(tmp_path / "val.jsonl", numbered(_examples(2, offset=100)))
    test = _write(tmp_path / "test.jsonl", numbered(_examples(3, offset=200)))
    import_text(
        str(train),
        str(tmp_path / "a"),
        val=str(val),
        test=str(test),
        text="utterance",
        label="y",
        featurizer=HashedNgrams(buckets=100, max_tokens=8),
    )
    info = load_info(tmp_path / "a")
    assert info.name == "a" and info.classes == ("2", "3", "4", "10")
    assert {k: v.num_samples for k, v in info.splits.items()} == {"train": 24, "val": 8, "test": 12}
    import_text(
        str(train),
        str(tmp_path / "b"),
        val=str(val),
        text="utterance",
        label="y",
        test_fraction=0,
        featurizer=HashedNgrams(buckets=100, max_tokens=8),
    )
    assert set(load_info(tmp_path / "b").splits) == {"train", "val"}


@pytest.mark.parametrize(
    "case, expected",
    [
        ("missing column", "train.csv:1: no column 'label' (the header has ['text', 'intent', 'domain'])"),
        ("empty text", "train.csv:4: empty text in column 'text'"),
        ("label only in test", "test.csv:3: label 'close_account' is not in the training data"),
        ("bad encoding", "train.csv:4: not valid utf-8 (byte 0xe9)"),
        ("ragged row", "train.csv:5: 4 fields, the header has 3"),
        ("bad json", "train.jsonl:2: not valid JSON"),
        ("json field", "train.jsonl:3: no field 'intent'"),
        ("two groups", "train.csv:8: label 'pay_late' in group 'cards', but in group 'payments' at"),
        ("unknown format", "train.xlsx: unknown table format '.xlsx'"),
    ],
)
def test_text_table_errors_name_file_and_line(tmp_path, case, expected):
    rows = _examples(4)
    train = tmp_path / "train.csv"
    test = None
    kw = dict(label="intent", group="domain")
    if case == "missing column":
        kw["label"] = "label"
    _write(train, rows)
    lines = train.read_text().split("\n")  # header, then one row a line
    if case == "empty text":
        lines[3] = ",card_lost,cards"
    elif case == "label only in test":
        test = _write(
            tmp_path / "test.csv", rows[:1] + [{"text": "shut it", "intent": "close_account", "domain": "cards"}]
        )
    elif case == "ragged row":
        lines[4] += ",extra"
    elif case == "two groups":
        lines[7] = lines[7].replace("payments", "cards")
    train.write_text("\n".join(lines))
    if case == "bad encoding":
        train.write_bytes(train.read_bytes().replace(b"my late", "my lat\u00e9".encode("latin-1"), 1))
    if case.startswith("json") or case == "bad json":
        train = _write(tmp_path / "train.jsonl", rows)
        lines = train.read_text().split("\n")
        if case == "bad json":
            lines[1] = lines[1][:-1]
        else:
            lines[2] = lines[2].replace('"intent"', '"label"')
        train.write_text("\n".join(lines))
    if case == "unknown format":
        train = tmp_path / "train.xlsx"
        train.write_text("x")
    with pytest.raises(DataError) as e:
        import_text(
            str(train), str(tmp_path / "out"), test=test and str(test), test_fraction=0, val_fraction=0.25, **kw
        )
    assert expected in str(e.value)
    assert not (tmp_path / "out" / "dataset.json").exists()


def test_specens_data_text_command(tmp_path):
    from click.testing import CliRunner

    from specens.cli.main import cli

    src = _write(tmp_path / "intents.tsv", _examples(10))
    r = CliRunner().invoke(
        cli,
        [
            "data",
            "text",
            "--train",
            str(src),
            "--out",
            str(tmp_path / "d"),
            "--label-column",
            "intent",
            "--group-column",
            "domain",
            "--buckets",
            "512",
            "--max-tokens",
            "16",
        ],
    )
    assert r.exit_code == 0, r.output
    assert "4 classes, 2 known groups, input array int64[16]" in r.output
    r = CliRunner().invoke(cli, ["data", "text", "--train", str(src), "--out", str(tmp_path / "e")])
    assert r.exit_code == 1 and "intents.tsv:1: no column 'label'" in r.stderr


def test_image_folder_keeps_one_channel_when_every_image_is_grey_and_advises_a_size(tmp_path):
    from click.testing import CliRunner

    from specens.cli.main import cli

    rng = np.random.default_rng(0)
    for c in ("a", "b"):
        (tmp_path / "src" / c).mkdir(parents=True)
        for i in range(10):
            Image.fromarray(rng.integers(0, 255, (60, 60), dtype=np.uint8)).save(tmp_path / "src" / c / f"{i}.png")
    r = CliRunner().invoke(cli, ["data", "folder", "--source", str(tmp_path / "src"), "--out", str(tmp_path / "g")])
    assert r.exit_code == 0, r.output
    assert load_info(tmp_path / "g").input.shape == (1, 60, 60)
    assert "note: images are 60x60" in r.output and "--size 32 stores 4x fewer pixels" in r.output
    import_folder(str(tmp_path / "src"), str(tmp_path / "rgb"), grayscale=False)
    assert load_info(tmp_path / "rgb").input.shape == (3, 60, 60)
    Image.fromarray(rng.integers(0, 255, (60, 60, 3), dtype=np.uint8)).save(tmp_path / "src" / "a" / "colour.png")
    import_folder(str(tmp_path / "src"), str(tmp_path / "mixed"), size=16)  # one colour image: three channels
    assert load_info(tmp_path / "mixed").input.shape == (3, 16, 16)


def test_a_source_listed_class_by_class_is_written_in_random_order(tmp_path):
    """A CSV sorted by label reaches the shards shuffled (seeded), so the training stream's shuffle
    buffer does not serve batches of one class; keys still name each row's place in the source."""
    rows = [f"{c} text {i},{c}" for c in "abcdefghij" for i in range(30)]
    (tmp_path / "sorted.csv").write_text("text,label\n" + "\n".join(rows) + "\n")
    for out in ("d1", "d2"):
        import_text(str(tmp_path / "sorted.csv"), str(tmp_path / out), val_fraction=0.1, test_fraction=0.1)
    first = next(iter(iter_split(str(tmp_path / "d1"), "train", 24))).labels
    assert len(set(first.tolist())) >= 6  # in source order these 24 rows would hold one or two classes
    keys = [[k for b in iter_split(str(tmp_path / d), "train", 50) for k in b.keys] for d in ("d1", "d2")]
    assert keys[0] == keys[1] and keys[0] != sorted(keys[0])  # seeded: the same order every import
