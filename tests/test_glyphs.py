"""The embedded glyph dataset: deterministic, face-disjoint splits, base-letter groups, no look-alikes."""

import hashlib
import unicodedata
from pathlib import Path

import numpy as np

from specens.data import glyphs, render
from specens.data.format import load_info
from specens.data.shards import iter_split


def test_deterministic_for_a_seed_whatever_the_rendering_processes(tmp_path, glyph_ds):
    # glyph_ds rendered in this process; these in two worker processes, byte for byte the same
    glyphs.import_glyphs(
        str(tmp_path),
        n_classes=30,
        train_per_class=40,
        val_per_class=4,
        test_per_class=4,
        seed=0,
        shard_size=400,
        progress=False,
        workers=2,
    )
    for shard in sorted(Path(glyph_ds).glob("*.tar")):
        assert (
            hashlib.sha256(shard.read_bytes()).digest() == hashlib.sha256((tmp_path / shard.name).read_bytes()).digest()
        )
    other = tmp_path / "seed1"
    glyphs.import_glyphs(
        str(other), n_classes=30, train_per_class=2, val_per_class=1, test_per_class=1, seed=1, progress=False
    )
    assert load_info(other).classes != load_info(glyph_ds).classes  # the seed picks other letter groups


def test_test_faces_are_disjoint_from_train_faces(glyph_ds):
    faces = load_info(glyph_ds).source["faces"]
    assert set(faces["test"]).isdisjoint(faces["train"]) and set(faces["val"]).isdisjoint(faces["train"])
    assert set(faces["test"]).isdisjoint(faces["val"])
    assert all(len(v) >= 2 for v in faces.values())


def test_groups_are_the_nfd_base_letters(glyph_ds):
    info = load_info(glyph_ds)
    chars = [name.split(" ")[0] for name in info.classes]
    for members, name in zip(info.groups, info.group_names, strict=True):
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
        digests = [hashlib.blake2b(render.render(chr(cp), face).tobytes()).digest() for cp in kept]
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


# -- users' fonts (printed Chinese and others) ------------------------------------------------

import shutil  # noqa: E402

import pytest  # noqa: E402

from specens.core.errors import ConfigError, DataError  # noqa: E402
from specens.data import fonts  # noqa: E402

SIX = ("DejaVuSans", "DejaVuSans-Bold", "DejaVuSerif", "DejaVuSerif-Bold", "DejaVuSansMono", "DejaVuSansMono-Bold")


@pytest.fixture
def font_dir(tmp_path) -> Path:
    """Six DejaVu faces copied into a folder, as a user's font folder."""
    d = tmp_path / "fonts"
    d.mkdir()
    for name in SIX:
        shutil.copy(Path(render.font_dir()) / f"{name}.ttf", d)
    return d


def test_gb2312_sets_come_from_pythons_codec(tmp_path):
    level1, everything = fonts.charset("gb2312-1"), fonts.charset("gb2312")
    assert len(level1) == 3755 and len(everything) == 6763 and everything[:3755] == level1
    assert chr(level1[0]) == "啊" and "己" in map(chr, level1) and "已" in map(chr, level1)
    (tmp_path / "set.txt").write_text("ab\nba c\n", encoding="utf-8")
    assert fonts.charset(str(tmp_path / "set.txt")) == [ord("a"), ord("b"), ord("c")]
    with pytest.raises(DataError, match="not one of"):
        fonts.charset(str(tmp_path / "nope.txt"))


def test_faces_of_a_folder_and_a_bad_font_file(font_dir):
    faces = fonts.find_faces([font_dir])
    assert sorted(f.name for f in faces) == sorted(
        [
            "DejaVu Sans",
            "DejaVu Sans Bold",
            "DejaVu Serif",
            "DejaVu Serif Bold",
            "DejaVu Sans Mono",
            "DejaVu Sans Mono Bold",
        ]
    )
    (font_dir / "broken.ttf").write_bytes(b"not a font at all")
    with pytest.raises(DataError, match=r"broken.ttf: cannot be read as a font"):
        fonts.find_faces([font_dir])


def test_regional_variants_are_one_design():
    f = [
        fonts.Face("a.ttc", i, fam, "Regular")
        for i, fam in enumerate(
            ["Noto Sans CJK JP", "Noto Sans CJK SC", "Noto Sans CJK TC", "AR PL UKai TW", "AR PL UKai CN"]
        )
    ]
    kept, dropped = fonts.one_per_design(f + [fonts.Face("b.ttf", 0, "Noto Sans CJK SC", "Bold")])
    assert [k.name for k in kept] == ["Noto Sans CJK SC", "AR PL UKai CN", "Noto Sans CJK SC Bold"]
    assert len(dropped) == 3


def test_face_split_is_disjoint_seeded_and_spreads_the_styles(font_dir):
    faces = fonts.find_faces([font_dir])
    a, b = fonts.assign_splits(faces, seed=0, val=1, test=2), fonts.assign_splits(faces, seed=0, val=1, test=2)
    assert a == b
    assert len(a["test"]) == 2 and len(a["val"]) == 1 and len(a["train"]) == 3
    assert not set(a["test"]) & set(a["train"]) and not set(a["val"]) & set(a["train"])
    assert len({fonts.style_of(f) for f in a["test"]}) == 2  # two styles, not two weights of one
    assert {fonts.style_of(f) for f in a["train"]} == {"sans", "serif", "mono"}
    with pytest.raises(DataError, match="cannot be split"):
        fonts.assign_splits(faces[:2])


def _charset(tmp_path, chars: str) -> str:
    p = tmp_path / "chars.txt"
    p.write_text(chars, encoding="utf-8")
    return str(p)


def test_import_from_fonts_keeps_what_every_face_renders_distinctly(font_dir, tmp_path):
    # Ж: every face; A and Greek Alpha render identically; 字 is in no DejaVu face
    chars = _charset(tmp_path, "AΑЖжbd字")
    kw = dict(
        fonts=[str(font_dir)],
        charset=chars,
        train_per_class=3,
        val_per_class=1,
        test_per_class=2,
        test_faces=["Serif Bold", "Mono Bold"],
        val_faces=["DejaVu Sans Mono"],
        progress=False,
    )
    glyphs.import_glyphs(str(tmp_path / "a"), n_classes=None, **kw)
    info = load_info(tmp_path / "a")
    assert [c.split()[0] for c in info.classes] == ["A", "b", "d", "Ж", "ж"]
    assert info.source["duplicates_dropped"] == {"U+0391": "U+0041"}
    assert (
        info.source["not_covered"] == {f: 1 for f in info.source["not_covered"]}
        and len(info.source["not_covered"]) == 6
    )
    names = {k: [f["name"] for f in v] for k, v in info.source["faces"].items()}
    assert names["test"] == ["DejaVu Serif Bold", "DejaVu Sans Mono Bold"] and names["val"] == ["DejaVu Sans Mono"]
    assert info.split("train").class_counts == (3,) * 5 and info.split("test").class_counts == (2,) * 5
    glyphs.import_glyphs(str(tmp_path / "b"), n_classes=None, **kw)  # deterministic for a seed
    for shard in sorted((tmp_path / "a").glob("*.tar")):
        assert shard.read_bytes() == (tmp_path / "b" / shard.name).read_bytes()
    with pytest.raises(DataError, match="--test-face 'Nope': matches none"):
        glyphs.import_glyphs(str(tmp_path / "c"), **{**kw, "test_faces": ["Nope"]})


def test_like_renders_the_same_classes_from_other_faces(font_dir, tmp_path):
    train_faces = tmp_path / "train_fonts"
    train_faces.mkdir()
    for name in SIX[:3]:
        shutil.move(str(font_dir / f"{name}.ttf"), train_faces)
    glyphs.import_glyphs(
        str(tmp_path / "a"),
        n_classes=None,
        fonts=[str(train_faces)],
        charset=_charset(tmp_path, "ЖжЯя"),
        train_per_class=2,
        val_per_class=1,
        test_per_class=1,
        progress=False,
    )
    glyphs.import_glyphs(
        str(tmp_path / "b"), fonts=[str(font_dir)], like=str(tmp_path / "a"), test_per_class=3, progress=False
    )
    a, b = load_info(tmp_path / "a"), load_info(tmp_path / "b")
    assert b.classes == a.classes and list(b.splits) == ["test"] and b.split("test").class_counts == (3,) * 4
    assert {f["name"] for f in b.source["faces"]["test"]}.isdisjoint(
        f["name"] for v in a.source["faces"].values() for f in v
    )
    shutil.copy(Path(render.font_dir()) / "cmr10.ttf", font_dir)  # a face without Cyrillic
    with pytest.raises(DataError, match=r"cmr10: lacks 4 of the 4 characters of .*\(ЖЯжя\)"):
        glyphs.import_glyphs(str(tmp_path / "c"), fonts=[str(font_dir)], like=str(tmp_path / "a"), progress=False)


def test_cjk_glyphs_are_centred_on_the_em_box_and_not_clipped(font_dir):
    face = fonts.find_faces([font_dir / "DejaVuSans.ttf"])[0]
    rng = np.random.default_rng(0)
    for ch in "ЖШЮ":
        for _ in range(20):  # with the strongest jitter the ink stays off the border
            img = render.render(ch, face, 32, rng, placement="em")
            assert img[:, 0].max() < 128 and img[:, -1].max() < 128 and img[0].max() < 128 and img[-1].max() < 128
        clean = render.render(ch, face, 32, placement="em").astype(float)
        ys, xs = np.nonzero(clean > 64)
        assert abs(xs.mean() - 15.5) < 3 and abs(ys.mean() - 15.5) < 4


def test_strong_augmentation_varies_the_shape_keeps_the_glyph_and_is_seeded(font_dir):
    face = fonts.find_faces([str(font_dir)])[0]
    draw = lambda seed, how: render.render("Ж", face, 32, np.random.default_rng(seed), "em", how)
    clean = render.render("Ж", face, 32, placement="em").astype(float)
    strong = [render.render("Ж", face, 32, np.random.default_rng(s), "em", "strong").astype(float) for s in range(20)]
    jitter = [render.render("Ж", face, 32, np.random.default_rng(s), "em", "jitter").astype(float) for s in range(20)]
    assert np.array_equal(draw(3, "strong"), draw(3, "strong"))  # a seed gives one rendering
    from scipy.ndimage import gaussian_filter

    def corr(imgs):  # with the clean rendering, both smoothed (pixel noise and 1-pixel shifts aside)
        c = gaussian_filter(clean, 1.5).ravel()
        return np.array([np.corrcoef(gaussian_filter(img, 1.5).ravel(), c)[0, 1] for img in imgs])

    # every strong rendering is still the glyph, yet further from the clean one than the jittered are
    assert corr(strong).min() > 0.4 and corr(strong).mean() < corr(jitter).mean() - 0.05
    with pytest.raises(ConfigError, match="augment"):
        glyphs.import_glyphs("unused", augment="strong")  # the embedded letters' bytes are fixed
    with pytest.raises(ConfigError, match="augment must be one of"):
        glyphs.import_glyphs("unused", fonts=[str(font_dir)], augment="wild")


def test_a_class_name_naming_no_code_point_is_refused():
    assert glyphs.class_code_point("字 U+5B57", "d.json") == 0x5B57
    for bad in ("x U+110000", "x U+-5", "x", "x U+zz"):
        with pytest.raises(DataError, match="d.json: class"):
            glyphs.class_code_point(bad, "d.json")


def test_like_renders_as_the_dataset_did_or_refuses(font_dir, tmp_path):
    """``--like`` of the embedded letters from the same DejaVu faces renders at the dataset's scale
    (the strong augmentation it used to take by default inked about twice the pixels: a generalist
    reading its own validation faces at 0.47 read those at 0.21), and the options it would ignore
    or contradict are refused, naming them."""
    from specens.data.shards import iter_split

    glyphs.import_glyphs(str(tmp_path / "a"), n_classes=6, train_per_class=8, val_per_class=1, test_per_class=1)
    glyphs.import_glyphs(str(tmp_path / "b"), fonts=[str(font_dir)], like=str(tmp_path / "a"), test_per_class=8)
    assert load_info(tmp_path / "b").source["augment"] == "jitter"

    def ink(root, split):  # mean total intensity of an image (the strong augmentation's levels and noise: +60%)
        return float(np.mean([b.inputs.sum((1, 2, 3)).mean() for b in iter_split(root, split, 64)]))

    assert abs(ink(tmp_path / "b", "test") / ink(tmp_path / "a", "train") - 1) < 0.15
    refused = {
        "n_classes": ({"n_classes": 100}, r"--classes \(n_classes\) has no effect with --like"),
        "train": ({"train_per_class": 5}, r"--train-per-class \(train_per_class\) has no effect"),
        "faces": ({"val_faces": ["Bold"]}, r"--val-face \(val_faces\) has no effect"),
        "size": ({"size": 24}, "--size 24: .*holds 32-pixel images"),
        "augment": ({"augment": "strong"}, "--augment strong: .*was rendered with 'jitter'"),
    }
    for change, match in refused.values():
        with pytest.raises((ConfigError, DataError), match=match):
            glyphs.import_glyphs(str(tmp_path / "c"), fonts=[str(font_dir)], like=str(tmp_path / "a"), **change)
    assert not (tmp_path / "c").exists()
