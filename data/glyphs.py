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
import unicodedata
from collections import defaultdict
from functools import lru_cache

import matplotlib
import numpy as np
from PIL import Image, ImageDraw, ImageFont

from specens.core.errors import ConfigError

from .format import InputSpec
from .shards import DatasetWriter

FACES = {
    "train": ("DejaVuSans", "DejaVuSans-Bold", "DejaVuSans-Oblique", "DejaVuSerif", "DejaVuSerif-Bold",
              "DejaVuSerif-Italic", "DejaVuSansMono", "DejaVuSansMono-Bold"),
    "val": ("DejaVuSans-BoldOblique", "DejaVuSansMono-Oblique"),
    "test": ("DejaVuSerif-BoldItalic", "DejaVuSansMono-BoldOblique"),
}
ALL_FACES = tuple(f for faces in FACES.values() for f in faces)
_CANVAS = 64  # glyphs are drawn at 2x and 1x of a 32-pixel output, then downsampled
_SPLIT_ID = {"train": 0, "val": 1, "test": 2}


def font_dir() -> str:
    return os.path.join(matplotlib.get_data_path(), "fonts", "ttf")


@lru_cache(maxsize=None)
def _font(face: str, size: int) -> ImageFont.FreeTypeFont:
    return ImageFont.truetype(os.path.join(font_dir(), face + ".ttf"), size)


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


def render(ch: str, face: str, size: int = 32, rng: np.random.Generator | None = None) -> np.ndarray:
    """Render one letter as a uint8 array of shape (size, size): white glyph on black.

    With ``rng`` None the rendering is clean (no jitter, no noise); otherwise ``rng`` draws the
    affine jitter, the stroke width and the pixel noise.
    """
    canvas = Image.new("L", (_CANVAS, _CANVAS), 0)
    stroke = 0 if rng is None else int(rng.integers(0, 2))
    ImageDraw.Draw(canvas).text((_CANVAS / 2, _CANVAS * 0.64), ch, fill=255, anchor="ms",
                                font=_font(face, int(_CANVAS * 0.53)), stroke_width=stroke, stroke_fill=255)
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
        canvas = canvas.transform(canvas.size, Image.Transform.AFFINE,
                                  (a[0, 0], a[0, 1], offset[0], a[1, 0], a[1, 1], offset[1]),
                                  resample=Image.Resampling.BILINEAR)
    img = np.asarray(canvas.resize((size, size), Image.Resampling.BOX), dtype=np.float32)
    if rng is not None:
        img = img + rng.normal(0.0, 12.0, size=img.shape)
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


def distinct_letters(code_points: list[int], size: int = 32) -> tuple[list[int], dict[int, int]]:
    """Drop letters whose clean renderings are identical to a lower code point's in most faces.

    Returns the kept code points and, for every dropped one, the kept code point it duplicates.
    Letters that render blank in any face are dropped too (mapped to -1).
    """
    votes: dict[tuple[int, int], int] = defaultdict(int)
    blank: set[int] = set()
    for face in ALL_FACES:
        first_of: dict[bytes, int] = {}
        for cp in code_points:
            img = render(chr(cp), face, size)
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
        if n > len(ALL_FACES) / 2 and cp not in dropped:
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


def import_glyphs(out: str, *, n_classes: int | None = 200, train_per_class: int = 48,
                  val_per_class: int = 8, test_per_class: int = 8, size: int = 32, seed: int = 0,
                  shard_size: int = 10_000, progress: bool = True):
    """Render the glyph dataset into ``out`` (train/val/test shards and ``dataset.json``).

    Args:
        n_classes: number of letters (None: all distinct covered letters, about 1,500).
        train_per_class, val_per_class, test_per_class: samples per class in each split, spread
            evenly over that split's faces.
        size: output image side in pixels.
        seed: seeds the class choice and every sample's augmentation.
    """
    from tqdm import tqdm

    if n_classes is not None and n_classes < 2:
        raise ConfigError(f"n_classes must be at least 2, got {n_classes}")
    kept, dropped = distinct_letters(covered_letters(), size)
    cps = choose_classes(kept, n_classes, seed)
    classes = [f"{chr(cp)} U+{cp:04X}" for cp in cps]
    bases = sorted({base_letter(chr(cp)) for cp in cps})
    group_index = {b: g for g, b in enumerate(bases)}
    groups = [[] for _ in bases]
    for label, cp in enumerate(cps):
        groups[group_index[base_letter(chr(cp))]].append(label)
    source = dict(importer="glyphs", n_classes=len(cps), train_per_class=train_per_class,
                  val_per_class=val_per_class, test_per_class=test_per_class, size=size, seed=seed,
                  faces={k: list(v) for k, v in FACES.items()},
                  duplicates_dropped={f"U+{cp:04X}": (f"U+{tw:04X}" if tw >= 0 else "blank")
                                      for cp, tw in sorted(dropped.items())})
    per_split = {"train": train_per_class, "val": val_per_class, "test": test_per_class}
    with DatasetWriter(out, "glyphs", classes, InputSpec("image", (1, size, size), "uint8"), groups=groups,
                       group_names=bases, source=source, shard_size=shard_size) as w:
        for split, n_per in per_split.items():
            faces = FACES[split]
            # Interleave classes so that every shard holds every class (good streaming shuffles).
            jobs = [(j, label, cp) for j in range(n_per) for label, cp in enumerate(cps)]
            rngs = {cp: np.random.default_rng([seed, cp, _SPLIT_ID[split]]) for cp in cps}
            with w.split(split) as s:
                for j, label, cp in tqdm(jobs, desc=f"glyphs {split}", disable=not progress, unit="img"):
                    img = render(chr(cp), faces[j % len(faces)], size, rngs[cp])
                    s.write(f"{split}_{cp:05x}_{j:04d}", img[None], label)
    return w
