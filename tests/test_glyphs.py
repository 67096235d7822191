"""The embedded glyph dataset: deterministic, face-disjoint splits, base-letter groups, no look-alikes."""

import hashlib
import unicodedata
from pathlib import Path

import numpy as np

from specens.data import glyphs
from specens.data.format import load_info
from specens.data.shards import iter_split


def test_deterministic_for_a_seed(tmp_path, glyph_ds):
    glyphs.import_glyphs(str(tmp_path), n_classes=30, train_per_class=40, val_per_class=4, test_per_class=4,
                         seed=0, shard_size=400, progress=False)
    for shard in sorted(Path(glyph_ds).glob("*.tar")):
        assert hashlib.sha256(shard.read_bytes()).digest() == hashlib.sha256((tmp_path / shard.name).read_bytes()).digest()
    other = tmp_path / "seed1"
    glyphs.import_glyphs(str(other), n_classes=30, train_per_class=2, val_per_class=1, test_per_class=1, seed=1,
                         progress=False)
    assert load_info(other).classes != load_info(glyph_ds).classes  # the seed picks other letter groups


def test_test_faces_are_disjoint_from_train_faces(glyph_ds):
    faces = load_info(glyph_ds).source["faces"]
    assert set(faces["test"]).isdisjoint(faces["train"]) and set(faces["val"]).isdisjoint(faces["train"])
    assert set(faces["test"]).isdisjoint(faces["val"])
    assert all(len(v) >= 2 for v in faces.values())


def test_groups_are_the_nfd_base_letters(glyph_ds):
    info = load_info(glyph_ds)
    chars = [name.split(" ")[0] for name in info.classes]
    for members, name in zip(info.groups, info.group_names):
        for c in members:
            assert unicodedata.normalize("NFD", chars[c])[0].casefold() == name
    assert sorted(c for g in info.groups for c in g) == list(range(info.n_classes))
    assert max(len(g) for g in info.groups) >= 3  # the small default still holds real confusable groups
    assert glyphs.base_letter("Ǻ") == glyphs.base_letter("a") == "a"


def test_no_two_kept_classes_render_identically():
    kept, dropped = glyphs.distinct_letters(glyphs.covered_letters())
    assert len(kept) > 1000
    assert dropped[0x0391] == 0x0041 and dropped[0x0410] == 0x0041  # Greek Alpha, Cyrillic A -> Latin A
    majority = len(glyphs.ALL_FACES) // 2 + 1
    same = np.zeros((len(kept), len(kept)), dtype=np.int32)
    for face in glyphs.ALL_FACES:
        digests = [hashlib.blake2b(glyphs.render(chr(cp), face).tobytes()).digest() for cp in kept]
        _, inverse = np.unique(np.array(digests, dtype=object), return_inverse=True)
        same += inverse[:, None] == inverse[None, :]
    np.fill_diagonal(same, 0)
    assert same.max() < majority


def test_every_split_has_every_class_and_images_are_not_blank(glyph_ds):
    info = load_info(glyph_ds)
    for split in ("train", "val", "test"):
        assert min(info.split(split).class_counts) > 0
    batch = next(iter(iter_split(glyph_ds, "test", batch_size=64)))
    assert batch.inputs.shape == (64, 1, 32, 32)
    ink = batch.inputs.amax(dim=(1, 2, 3))
    assert (ink > 0.5).all()
