"""The embedded default dataset: Unicode letters rendered from the DejaVu faces matplotlib ships.

A real large label space with genuine confusable groups, built offline from fonts that are
installed with a dependency:

- **Classes** are the Unicode letters (category ``L*``) present in all twelve DejaVu faces
  (Sans, Serif and Sans Mono, each regular, bold, oblique/italic and bold-oblique/italic):
  about 1,500 letters.
- **Known groups**: a class's group is its base letter, the first character of its NFD
  decomposition, case-folded, so that á, à, â, ä, å, ā, A, Á … form one group: exactly the kind
  of classes a generalist confuses.
- **Duplicates** removed: classes whose clean renderings are pixel-identical in more than half
  of the faces (Latin A, Greek Alpha and Cyrillic A) cannot be told apart, so only the lowest
  code point of each such set is kept; the dropped ones are listed in ``dataset.json``.
- **Splits by face**: train, validation and test use disjoint faces, so test accuracy measures
  recognition of letters in type faces never seen in training.
- **Augmentation**: every sample is rendered with a random affine jitter (rotation, scale, shear,
  translation), a random stroke width, and Gaussian pixel noise, all drawn from a generator seeded
  by (seed, code point, split), so the dataset is deterministic for a seed.

Glyphs are drawn at their baseline, not centred on their bounding box, so that case and size
differences (o/O, x/X) survive the rendering.
"""

from __future__ import annotations

import hashlib
import os
import sys
import unicodedata
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache

import matplotlib
import numpy as np
from PIL import Image, ImageDraw, ImageFont

from specens.core.errors import ConfigError, DataError

from .fonts import Face
from .format import InputSpec
from .shards import DatasetWriter

FACES = {
    "train": (
        "DejaVuSans",
        "DejaVuSans-Bold",
        "DejaVuSans-Oblique",
        "DejaVuSerif",
        "DejaVuSerif-Bold",
        "DejaVuSerif-Italic",
        "DejaVuSansMono",
        "DejaVuSansMono-Bold",
    ),
    "val": ("DejaVuSans-BoldOblique", "DejaVuSansMono-Oblique"),
    "test": ("DejaVuSerif-BoldItalic", "DejaVuSansMono-BoldOblique"),
}
ALL_FACES = tuple(f for faces in FACES.values() for f in faces)
_CANVAS = 64  # glyphs are drawn at 2x and 1x of a 32-pixel output, then downsampled
_SPLIT_ID = {"train": 0, "val": 1, "test": 2}


def font_dir() -> str:
    return os.path.join(matplotlib.get_data_path(), "fonts", "ttf")


@cache
def _font(face: str | Face, size: int) -> ImageFont.FreeTypeFont:
    """A face at ``size`` pixels: one of the embedded DejaVu faces by name, or a :class:`Face`."""
    if isinstance(face, Face):
        return ImageFont.truetype(face.path, size, index=face.index)
    return ImageFont.truetype(os.path.join(font_dir(), face + ".ttf"), size)


def face_name(face: str | Face) -> str:
    return face.name if isinstance(face, Face) else face


def covered_letters() -> list[int]:
    """Code points of the letters every face in :data:`ALL_FACES` maps, ascending."""
    from matplotlib import ft2font

    common = None
    for face in ALL_FACES:
        cmap = ft2font.FT2Font(os.path.join(font_dir(), face + ".ttf")).get_charmap()
        letters = {cp for cp, glyph in cmap.items() if glyph and unicodedata.category(chr(cp)).startswith("L")}
        common = letters if common is None else common & letters
    return sorted(common)


def base_letter(ch: str) -> str:
    """The known group of a letter: the first character of its NFD decomposition, case-folded.

    Example: ``base_letter("Á") == base_letter("ă") == "a"``.
    """
    return unicodedata.normalize("NFD", ch)[0].casefold()[0]


AUGMENTATIONS = ("jitter", "strong")


def render(
    ch: str,
    face: str | Face,
    size: int = 32,
    rng: np.random.Generator | None = None,
    placement: str = "baseline",
    augment: str = "jitter",
) -> np.ndarray:
    """Render one character as a uint8 array of shape (size, size): white glyph on black.

    ``placement``: ``"baseline"`` (the embedded letters) draws on a fixed baseline, so that case
    and size differences survive; ``"em"`` centres the glyph's em box (half its advance, halfway
    between ascender and descender) on the canvas at a size that leaves room for the jitter, as
    CJK faces place their glyphs at other offsets than DejaVu does. With ``rng`` None the
    rendering is clean (no jitter, no noise); otherwise ``rng`` draws the affine jitter, the
    stroke width and the pixel noise (``augment="jitter"``), or, with ``"strong"``, the
    distortions of :func:`_strong` that make every rendering of a face a different shape.
    """
    if rng is not None and augment == "strong":
        return _strong(ch, face, size, rng, placement)
    canvas = _draw(ch, face, placement, 0 if rng is None else int(rng.integers(0, 2)))
    if rng is not None:
        angle = np.deg2rad(rng.uniform(-8, 8))
        scale = rng.uniform(0.88, 1.12)
        shear = rng.uniform(-0.15, 0.15)
        tx, ty = rng.uniform(-3, 3, size=2)  # pixels of the 64-pixel canvas: up to ~1.5 output pixels
        # Inverse map (output -> input) about the canvas centre, as PIL's AFFINE transform expects.
        c, s = np.cos(angle), np.sin(angle)
        a = np.array([[c, -s + shear], [s, c]]) / scale
        centre = np.array([_CANVAS / 2, _CANVAS / 2])
        offset = centre - a @ (centre + np.array([tx, ty]))
        canvas = canvas.transform(
            canvas.size,
            Image.Transform.AFFINE,
            (a[0, 0], a[0, 1], offset[0], a[1, 0], a[1, 1], offset[1]),
            resample=Image.Resampling.BILINEAR,
        )
    img = np.asarray(canvas.resize((size, size), Image.Resampling.BOX), dtype=np.float32)
    if rng is not None:
        img = img + rng.normal(0.0, 12.0, size=img.shape)
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


def _draw(ch: str, face: str | Face, placement: str, stroke: int) -> Image.Image:
    """The character on the 64-pixel canvas, white on black, placed as :func:`render` describes."""
    canvas = Image.new("L", (_CANVAS, _CANVAS), 0)
    centre_y, anchor, em = (0.5, "mm", 0.68) if placement == "em" else (0.64, "ms", 0.53)
    ImageDraw.Draw(canvas).text(
        (_CANVAS / 2, _CANVAS * centre_y),
        ch,
        fill=255,
        anchor=anchor,
        font=_font(face, int(_CANVAS * em)),
        stroke_width=stroke,
        stroke_fill=255,
    )
    return canvas


def _strong(ch: str, face: str | Face, size: int, rng: np.random.Generator, placement: str) -> np.ndarray:
    """A rendering distorted as printed text is, so that a face's renderings differ in shape and a
    small net cannot memorise them: a stroke weight (0 to 2 canvas pixels added), an affine map
    (rotation ±10°, x and y scale 0.8-1.15 each, shear ±0.3, shift ±3 output pixels), a smooth
    elastic displacement (a Gaussian-smoothed random field of up to 2.5 canvas pixels), a blur,
    ink and paper levels and pixel noise. Every draw comes from ``rng``."""
    from PIL import ImageFilter
    from scipy.ndimage import gaussian_filter, map_coordinates

    canvas = _draw(ch, face, placement, int(rng.choice(3, p=(0.5, 0.35, 0.15))))
    angle = np.deg2rad(rng.uniform(-10, 10))
    sx, sy = rng.uniform(0.8, 1.15, size=2)
    shear = rng.uniform(-0.3, 0.3)
    shift = rng.uniform(-6, 6, size=2)  # canvas pixels: up to 3 output pixels
    c, s = np.cos(angle), np.sin(angle)
    forward = np.array([[c, -s], [s, c]]) @ np.array([[1.0, shear], [0.0, 1.0]]) @ np.diag([sx, sy])
    inverse = np.linalg.inv(forward)  # output -> input about the canvas centre
    centre = np.array([_CANVAS / 2, _CANVAS / 2])
    rows, cols = np.mgrid[0:_CANVAS, 0:_CANVAS].astype(np.float64)
    amplitude = rng.uniform(0.0, 2.5)
    field = gaussian_filter(rng.uniform(-1, 1, size=(2, _CANVAS, _CANVAS)), sigma=(0, 8, 8))
    field *= amplitude / max(float(np.abs(field).max()), 1e-9)
    out_xy = np.stack([cols, rows]) - (centre + shift)[:, None, None]  # (2, H, W) output offsets, x then y
    src = np.einsum("ij,jhw->ihw", inverse, out_xy) + centre[:, None, None] + field
    img = map_coordinates(np.asarray(canvas, dtype=np.float64), [src[1], src[0]], order=1, cval=0.0)
    img = np.asarray(
        Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).filter(ImageFilter.GaussianBlur(rng.uniform(0.0, 1.5))),
        dtype=np.float64,
    )
    ink, paper = rng.uniform(0.6, 1.0), rng.uniform(0.0, 40.0)
    img = paper + img * (ink - paper / 255.0)
    img = np.asarray(
        Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).resize((size, size), Image.Resampling.BOX),
        dtype=np.float64,
    )
    img = img + rng.normal(0.0, rng.uniform(4.0, 20.0), size=img.shape)
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


def distinct_letters(
    code_points: list[int], size: int = 32, faces: Sequence[str | Face] = ALL_FACES, placement: str = "baseline"
) -> tuple[list[int], dict[int, int]]:
    """Drop characters whose clean renderings are identical to a lower code point's in most faces.

    Returns the kept code points and, for every dropped one, the kept code point it duplicates.
    Characters that render blank in any face are dropped too (mapped to -1).
    """
    votes: dict[tuple[int, int], int] = defaultdict(int)
    blank: set[int] = set()
    for face in faces:
        first_of: dict[bytes, int] = {}
        for cp in code_points:
            img = render(chr(cp), face, size, placement=placement)
            if not img.any():
                blank.add(cp)
                continue
            digest = hashlib.blake2b(img.tobytes(), digest_size=16).digest()
            if digest in first_of:
                votes[(cp, first_of[digest])] += 1
            else:
                first_of[digest] = cp
    dropped = {cp: -1 for cp in blank}
    for (cp, twin), n in sorted(votes.items()):
        if n > len(faces) / 2 and cp not in dropped:
            dropped[cp] = twin  # twin < cp: the first letter with this rendering in a face
    kept = [cp for cp in code_points if cp not in dropped]
    return kept, dropped


def choose_classes(code_points: list[int], n_classes: int | None, seed: int) -> list[int]:
    """Pick ``n_classes`` letters in whole base-letter groups, groups of several letters first.

    The groups are taken in a seeded random order, so a small dataset still holds real confusable
    groups; the last group may be cut to hit ``n_classes`` exactly. Returns sorted code points.
    """
    if n_classes is None or n_classes >= len(code_points):
        return list(code_points)
    by_base: dict[str, list[int]] = defaultdict(list)
    for cp in code_points:
        by_base[base_letter(chr(cp))].append(cp)
    bases = sorted(by_base)
    order = np.random.default_rng(seed).permutation(len(bases))
    ranked = sorted((bases[i] for i in order), key=lambda b: len(by_base[b]) == 1)  # stable
    chosen: list[int] = []
    for b in ranked:
        chosen.extend(by_base[b][: n_classes - len(chosen)])
        if len(chosen) == n_classes:
            break
    return sorted(chosen)


def import_glyphs(
    out: str,
    *,
    n_classes: int | None = 200,
    train_per_class: int = 48,
    val_per_class: int = 8,
    test_per_class: int = 8,
    size: int = 32,
    seed: int = 0,
    shard_size: int = 10_000,
    progress: bool = True,
    fonts: Sequence[str] | None = None,
    charset: str = "letters",
    val_faces: Sequence[str] = (),
    test_faces: Sequence[str] = (),
    like: str | None = None,
    workers: int = 0,
    augment: str | None = None,
):
    """Render a glyph dataset into ``out`` (train/val/test shards and ``dataset.json``).

    Args:
        n_classes: number of characters (None: all distinct covered ones). Letters are taken in
            whole base-letter groups (:func:`choose_classes`); other sets as a seeded sample.
        train_per_class, val_per_class, test_per_class: samples per class in each split, spread
            evenly over that split's faces.
        size: output image side in pixels.
        seed: seeds the class choice, the face split and every sample's augmentation.
        fonts: font files or folders to render from (:func:`specens.data.fonts.find_faces`; one
            face per design); None renders the embedded DejaVu faces with their fixed split.
        charset: ``"letters"`` (Unicode letters, grouped by base letter), ``"gb2312-1"``,
            ``"gb2312"`` or a UTF-8 file of characters (:func:`specens.data.fonts.charset`). Only
            characters that every face maps and renders distinctly are kept; the rest are listed
            in ``dataset.json``'s ``source``.
        val_faces, test_faces: face names (exactly, else as substrings) that go to validation /
            test (every one must match a face); by default a seeded rule spreads the styles over the splits
            (:func:`specens.data.fonts.assign_splits`).
        like: a dataset whose classes (and known groups) to render again from ``fonts``, every face
            into the test split (``test_per_class`` each), to evaluate a run on faces it never saw;
            a face lacking one of its characters is refused, the characters listed.
        workers: rendering processes; 0 = one per CPU for large splits (the output does not
            depend on it).
        augment: ``"jitter"`` (a small affine jitter, stroke width and noise: the embedded
            letters, which must stay byte-identical) or ``"strong"`` (:func:`_strong`: elastic and
            affine distortion, stroke weight, blur, levels, noise; every rendering of a face a
            different shape), in every split, so that validation and test measure the training
            distribution on unseen faces. None: ``"strong"`` with ``fonts``, ``"jitter"`` without.
    """
    if n_classes is not None and n_classes < 2:
        raise ConfigError(f"n_classes must be at least 2, got {n_classes}")
    augment = augment or ("strong" if fonts is not None else "jitter")
    if augment not in AUGMENTATIONS:
        raise ConfigError(f"augment must be one of {', '.join(AUGMENTATIONS)}, got {augment!r}")
    if fonts is None:
        if augment != "jitter":
            raise ConfigError("the embedded DejaVu letters render with augment='jitter' (their bytes are fixed)")
        if charset != "letters" or like or val_faces or test_faces:
            raise ConfigError(
                "charset, like, val_faces and test_faces need fonts (the embedded DejaVu faces render "
                "letters with a fixed split)"
            )
        return _import_dejavu(
            out, n_classes, train_per_class, val_per_class, test_per_class, size, seed, shard_size, progress, workers
        )
    plan = _font_plan(
        fonts,
        n_classes,
        seed,
        charset,
        val_faces,
        test_faces,
        like,
        size,
        {"train": train_per_class, "val": val_per_class, "test": test_per_class},
    )
    source = dict(
        importer="glyphs",
        charset=charset,
        n_classes=len(plan.cps),
        size=size,
        seed=seed,
        augment=augment,
        per_class={k: v for k, v in plan.per_split.items()},
        like=like,
        **plan.source,
    )
    return _write(
        out,
        plan.name,
        plan.cps,
        plan.groups,
        plan.group_names,
        plan.faces,
        plan.per_split,
        size,
        seed,
        shard_size,
        progress,
        source,
        plan.placement,
        workers,
        augment,
    )


def _import_dejavu(
    out, n_classes, train_per_class, val_per_class, test_per_class, size, seed, shard_size, progress, workers
):
    """The embedded default: letters of the DejaVu faces, grouped by base letter."""
    kept, dropped = distinct_letters(covered_letters(), size)
    cps = choose_classes(kept, n_classes, seed)
    bases, groups = _base_groups(cps)
    source = dict(
        importer="glyphs",
        n_classes=len(cps),
        train_per_class=train_per_class,
        val_per_class=val_per_class,
        test_per_class=test_per_class,
        size=size,
        seed=seed,
        faces={k: list(v) for k, v in FACES.items()},
        duplicates_dropped={
            f"U+{cp:04X}": (f"U+{tw:04X}" if tw >= 0 else "blank") for cp, tw in sorted(dropped.items())
        },
    )
    per_split = {"train": train_per_class, "val": val_per_class, "test": test_per_class}
    return _write(
        out,
        "glyphs",
        cps,
        groups,
        bases,
        FACES,
        per_split,
        size,
        seed,
        shard_size,
        progress,
        source,
        "baseline",
        workers,
        "jitter",
    )


def _base_groups(cps: list[int]) -> tuple[list[str], list[list[int]]]:
    bases = sorted({base_letter(chr(cp)) for cp in cps})
    group_index = {b: g for g, b in enumerate(bases)}
    groups: list[list[int]] = [[] for _ in bases]
    for label, cp in enumerate(cps):
        groups[group_index[base_letter(chr(cp))]].append(label)
    return bases, groups


def class_name(cp: int) -> str:
    return f"{chr(cp)} U+{cp:04X}"


def class_code_point(name: str, where: str) -> int:
    """The code point of a class name :func:`class_name` wrote (``"字 U+5B57"``)."""
    try:
        cp = int(name.rsplit("U+", 1)[1], 16)
    except (IndexError, ValueError):
        cp = -1
    if not 0 <= cp <= sys.maxunicode:  # a stranger's dataset.json: no code point chr() refuses later
        raise DataError(f"{where}: class {name!r} is not a glyph class ('<char> U+<hex>', at most U+10FFFF)")
    return cp


def _write(
    out,
    name,
    cps,
    groups,
    group_names,
    faces,
    per_split,
    size,
    seed,
    shard_size,
    progress,
    source,
    placement,
    workers,
    augment,
):
    from tqdm import tqdm

    classes = [class_name(cp) for cp in cps]
    with DatasetWriter(
        out,
        name,
        classes,
        InputSpec("image", (1, size, size), "uint8"),
        groups=groups,
        group_names=group_names,
        source=source,
        shard_size=shard_size,
    ) as w:
        for split, n_per in per_split.items():
            jobs = [(cp, faces[split], n_per, size, (seed, cp, _SPLIT_ID[split]), placement, augment) for cp in cps]
            with tqdm(total=n_per * len(cps), desc=f"glyphs {split}", disable=not progress, unit="img") as bar:
                per_class = _render_all(jobs, workers, bar.update)
            with w.split(split) as s:
                # Interleave classes so that every shard holds every class (good streaming shuffles).
                for j in range(n_per):
                    for (label, cp), images in zip(enumerate(cps), per_class, strict=True):
                        s.write(f"{split}_{cp:05x}_{j:04d}", images[j][None], label)
    return w


def _render_class(job) -> np.ndarray:
    """All of one class's samples in a split, (n, size, size): sample j from face j mod faces, every
    jitter from one generator seeded by (seed, code point, split), drawn in sample order."""
    cp, split_faces, n_per, size, rng_seed, placement, augment = job
    rng = np.random.default_rng(list(rng_seed))
    if n_per == 0:
        return np.zeros((0, size, size), np.uint8)
    return np.stack(
        [render(chr(cp), split_faces[j % len(split_faces)], size, rng, placement, augment) for j in range(n_per)]
    )


PARALLEL_FROM = 20_000  # images in a split from which rendering uses a process per CPU by default


def _render_all(jobs, workers, advance) -> list[np.ndarray]:
    """Every class's samples (:func:`_render_class`), in ``workers`` processes (0: one per CPU for
    splits of at least :data:`PARALLEL_FROM` images, else 1). Each class draws from its own
    generator, so the bytes do not depend on ``workers``; ``advance(n)`` is called as classes finish."""
    n_images = sum(job[2] for job in jobs)
    if workers == 0:
        workers = (os.cpu_count() or 1) if n_images >= PARALLEL_FROM else 1
    out = []
    if workers <= 1:
        for job in jobs:
            out.append(_render_class(job))
            advance(job[2])
        return out
    import multiprocessing

    with multiprocessing.get_context("spawn").Pool(workers) as pool:
        for images in pool.imap(_render_class, jobs, chunksize=max(1, len(jobs) // (16 * workers))):
            out.append(images)
            advance(len(images))
    return out


@dataclass
class _Plan:
    name: str
    cps: list[int]
    groups: list[list[int]] | None
    group_names: list[str] | None
    faces: dict[str, list[Face]]
    per_split: dict[str, int]
    placement: str
    source: dict


def _font_plan(fonts, n_classes, seed, charset_name, val_faces, test_faces, like, size, per_split) -> _Plan:
    """What to render from users' fonts: faces per split, the classes, and what was dropped."""
    from .fonts import assign_splits, charset, covered, find_faces, one_per_design

    faces, same_design = one_per_design(find_faces(fonts))
    placement = "baseline" if charset_name == "letters" else "em"
    dropped_faces = [f.name for f in same_design]  # regional variants, then pixel-identical designs
    if like:
        from .format import load_info

        info = load_info(like)
        cps = [class_code_point(c, f"{like}/dataset.json") for c in info.classes]
        _, lacking = covered(faces, cps)
        if lacking:
            face, missing = next(iter(lacking.items()))
            raise DataError(
                f"{face}: lacks {len(missing)} of the {len(cps)} characters of {like} "
                f"({''.join(chr(c) for c in missing[:10])}{' …' if len(missing) > 10 else ''}); "
                "leave that face out"
            )
        groups = None if info.groups is None else [list(g) for g in info.groups]
        names = None if info.group_names is None else list(info.group_names)
        return _Plan(
            f"{info.name}-like",
            cps,
            groups,
            names,
            {"test": faces},
            {"test": per_split["test"]},
            placement,
            {"faces": {"test": [f.to_json() for f in faces]}, "same_design_dropped": dropped_faces},
        )
    if charset_name == "letters":
        wanted = sorted(
            cp for cp in set().union(*(_cmap_of(f) for f in faces)) if unicodedata.category(chr(cp)).startswith("L")
        )
    else:
        wanted = charset(charset_name)
    common, lacking = covered(faces, wanted)
    faces, identical = distinct_faces(faces, common[:64], size, placement)
    dropped_faces += [f.name for f in identical]
    kept, dropped = distinct_letters(common, size, faces, placement)
    if len(kept) < 2:
        raise DataError(
            f"{', '.join(map(str, fonts))}: only {len(kept)} characters of {charset_name!r} are mapped "
            "and rendered distinctly by every face"
        )
    if charset_name == "letters":
        cps = choose_classes(kept, n_classes, seed)
        group_names, groups = _base_groups(cps)
    else:
        take = len(kept) if n_classes is None or n_classes >= len(kept) else n_classes
        cps = sorted(int(c) for c in np.random.default_rng(seed).choice(kept, size=take, replace=False))
        groups = group_names = None
    splits = _split_faces(faces, val_faces, test_faces, seed, assign_splits)
    source = {
        "faces": {k: [f.to_json() for f in v] for k, v in splits.items()},
        "same_design_dropped": dropped_faces,
        "not_covered": {face: len(missing) for face, missing in lacking.items()},
        "duplicates_dropped": {
            f"U+{cp:04X}": (f"U+{tw:04X}" if tw >= 0 else "blank") for cp, tw in sorted(dropped.items())
        },
    }
    return _Plan("glyphs", cps, groups, group_names, splits, per_split, placement, source)


def distinct_faces(
    faces: Sequence[Face], probe: Sequence[int], size: int = 32, placement: str = "em"
) -> tuple[list[Face], list[Face]]:
    """(kept, dropped): a face whose clean renderings of every ``probe`` character are pixel-identical
    to an earlier face's draws those characters in the same design (a collection's "Mono" face
    differs from its sibling in Latin widths only), so it is dropped: it would put one design in
    two splits."""
    seen: set[bytes] = set()
    kept, dropped = [], []
    for f in faces:
        h = hashlib.blake2b(digest_size=16)
        for cp in probe:
            h.update(render(chr(cp), f, size, placement=placement).tobytes())
        (dropped if h.digest() in seen else kept).append(f)
        seen.add(h.digest())
    return kept, dropped


def _cmap_of(face: Face) -> frozenset[int]:
    from .fonts import _cmap

    return _cmap(face.path, face.index)


def _split_faces(faces, val_faces, test_faces, seed, assign_splits) -> dict[str, list[Face]]:
    if not (val_faces or test_faces):
        return assign_splits(faces, seed)
    chosen: dict[str, list[Face]] = {}
    for split, patterns in (("test", test_faces), ("val", val_faces)):
        chosen[split] = []
        for pat in patterns:
            hits = (
                [f for f in faces if pat.lower() == f.name.lower()]  # an exact name, else every face it is part of
                or [f for f in faces if pat.lower() in f.name.lower()]
            )
            if not hits:
                raise DataError(
                    f"--{split}-face {pat!r}: matches none of the faces ({', '.join(f.name for f in faces)})"
                )
            chosen[split] += [f for f in hits if f not in chosen[split]]
    overlap = set(chosen["test"]) & set(chosen["val"])
    if overlap:
        raise DataError(f"face {sorted(f.name for f in overlap)[0]!r} is given to both validation and test")
    rest = [f for f in faces if f not in chosen["test"] and f not in chosen["val"]]
    if not rest or not chosen["test"] or not chosen["val"]:
        raise DataError(
            "every split needs a face: give at least one --val-face and one --test-face and leave faces for training"
        )
    return {"train": rest, "val": chosen["val"], "test": chosen["test"]}
