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

import dataclasses
import hashlib
import os
import sys
import unicodedata
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from specens.core.errors import ConfigError, DataError
from specens.core.io import check_outside_inputs
from specens.core.records import Record

from .fonts import Face, cmap_of, covered, find_faces, one_per_design, splits_by_name
from .fonts import charset as read_charset
from .format import INFO_FILE, InputSpec, load_info
from .render import AUGMENTATIONS, distinct_faces, font_dir, render, render_classes
from .writer import DatasetWriter

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
_SPLIT_ID = {"train": 0, "val": 1, "test": 2}


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
        fonts: font files or folders (:func:`specens.data.fonts.find_faces`; one face per design);
            None renders the embedded DejaVu faces with their fixed split.
        charset: ``"letters"`` (grouped by base letter), ``"gb2312-1"``, ``"gb2312"`` or a UTF-8
            file of characters (:func:`specens.data.fonts.charset`). Only characters every face
            maps and renders distinctly are kept; the rest are listed in ``dataset.json``.
        val_faces, test_faces: face names (exactly, else as substrings; each must match) for
            validation / test; by default a seeded rule spreads the styles over the splits
            (:func:`specens.data.fonts.assign_splits`).
        like: a dataset whose classes (and groups) to render again from ``fonts``, every face into
            the test split (``test_per_class`` each), to evaluate a run on unseen faces; a face lacking one of its
            characters is refused, the characters listed.
        workers: rendering processes; 0 = one per CPU for large splits (the output does not
            depend on it).
        augment: ``"jitter"`` (small affine jitter, stroke width, noise: the embedded letters,
            byte-identical) or ``"strong"`` (:func:`specens.data.render.render`: elastic and affine
            distortion, stroke weight, blur, levels, noise), in every split, so that validation and
            test measure the training distribution on unseen faces. None: ``"strong"`` with
            ``fonts``, ``"jitter"`` without.
    """
    check_outside_inputs(out, "--out", like=like)
    if like:
        asked = dict(n_classes=n_classes, charset=charset, val_faces=tuple(val_faces), test_faces=tuple(test_faces))
        asked.update(train_per_class=train_per_class, val_per_class=val_per_class)
        augment, charset = _like_rendering(like, asked, size, augment)
    augment = _check_options(n_classes, fonts, augment, charset, like, val_faces, test_faces)
    if fonts is None:
        return _import_dejavu(
            out, n_classes, train_per_class, val_per_class, test_per_class, size, seed, shard_size, progress, workers
        )
    per_split = {"train": train_per_class, "val": val_per_class, "test": test_per_class}
    plan = _font_plan(fonts, n_classes, seed, charset, val_faces, test_faces, like, size, per_split)
    source = _font_source(plan, charset, size, seed, augment, like)
    plan = dataclasses.replace(plan, source=source)
    return _write(out, plan, size, seed, shard_size, progress, workers, augment)


def _font_source(plan, charset, size, seed, augment, like) -> dict:
    """``dataset.json``'s ``source`` of a dataset rendered from fonts: how to render it again."""
    return dict(
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


_LIKE_IGNORES = {  # option (parameter): its default; --like renders the other dataset's classes into test only
    "--classes (n_classes)": 200,
    "--charset (charset)": "letters",
    "--val-face (val_faces)": (),
    "--test-face (test_faces)": (),
    "--train-per-class (train_per_class)": 48,
    "--val-per-class (val_per_class)": 8,
}


def _like_rendering(like: str, asked: dict, size: int, augment: str | None) -> tuple[str, str]:
    """``--like``'s rendering, which must be the dataset's own for its generalist to read it: its
    image size, augmentation and placement (from its ``dataset.json``); returns (augment, the
    character set, which decides the placement). An option that ``--like`` would ignore, or a size
    or augmentation other than the dataset's, is refused naming it, rather than silently rendering
    something else."""
    for (option, default), value in zip(_LIKE_IGNORES.items(), asked.values(), strict=True):
        if value != default:
            raise ConfigError(
                f"{option} has no effect with --like: the classes are {like}'s and every face renders "
                "into the test split (leave it out)"
            )
    info = load_info(like)
    where = f"{like}/{INFO_FILE}"
    rendering = _Rendering.from_json({k: v for k, v in info.source.items() if k in _RENDERING}, f"{where}: 'source'")
    if rendering.importer != "glyphs" or info.input.kind != "image":
        raise DataError(f"{where}: not a glyph dataset (source importer {rendering.importer!r}); --like renders glyphs")
    theirs = info.input.shape[-1]
    if size != theirs:
        raise ConfigError(f"--size {size}: {where} holds {theirs}-pixel images; --like renders at the dataset's size")
    if augment is not None and augment != rendering.augment:
        raise ConfigError(
            f"--augment {augment}: {where} was rendered with {rendering.augment!r}; --like renders as the dataset did"
        )
    return rendering.augment, rendering.charset


@dataclass(frozen=True, kw_only=True)
class _Rendering(Record):
    """What ``--like`` reads of a dataset's ``source`` (the rest is provenance): a key an older
    import did not write reads as what that import did."""

    ERROR: ClassVar = DataError

    importer: str | None = None
    augment: str = "jitter"  # the embedded letters: a light jitter
    charset: str = "letters"


_RENDERING = ("importer", "augment", "charset")


def _check_options(n_classes, fonts, augment, charset, like, val_faces, test_faces) -> str:
    """Refuse options that do not go together; returns the augmentation (its default filled in)."""
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
    return augment


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
    plan = _Plan("glyphs", cps, groups, bases, dict(FACES), per_split, "baseline", source)
    return _write(out, plan, size, seed, shard_size, progress, workers, "jitter")


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


def _write(out, plan: _Plan, size, seed, shard_size, progress, workers, augment):
    from specens.core.progress import progress_bar

    cps = plan.cps
    with DatasetWriter(
        out,
        plan.name,
        [class_name(cp) for cp in cps],
        InputSpec("image", (1, size, size), "uint8"),
        groups=plan.groups,
        group_names=plan.group_names,
        source=plan.source,
        shard_size=shard_size,
    ) as w:
        for split, n_per in plan.per_split.items():
            faces, split_id = plan.faces[split], _SPLIT_ID[split]
            jobs = [(cp, faces, n_per, size, (seed, cp, split_id), plan.placement, augment) for cp in cps]
            with progress_bar(total=n_per * len(cps), desc=f"glyphs {split}", unit="img", enabled=progress) as bar:
                per_class = render_classes(jobs, workers, bar.update)
            with w.split(split) as s:
                # Interleave classes so that every shard holds every class (good streaming shuffles).
                for j in range(n_per):
                    for (label, cp), images in zip(enumerate(cps), per_class, strict=True):
                        s.write(f"{split}_{cp:05x}_{j:04d}", images[j][None], label)
    return w


@dataclass
class _Plan:
    """What a glyph dataset renders: its name, classes (code points) and known groups, the faces
    and samples per class of each split, the placement, and the ``source`` record."""

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
    faces, same_design = one_per_design(find_faces(fonts))
    placement = "baseline" if charset_name == "letters" else "em"
    dropped_faces = [f.name for f in same_design]  # regional variants, then pixel-identical designs
    if like:
        return _like_plan(like, faces, per_split, placement, dropped_faces)
    if charset_name == "letters":
        wanted = sorted(
            cp for cp in set().union(*(cmap_of(f) for f in faces)) if unicodedata.category(chr(cp)).startswith("L")
        )
    else:
        wanted = read_charset(charset_name)
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
    splits = splits_by_name(faces, val_faces, test_faces, seed)
    source = {
        "faces": {k: [f.to_json() for f in v] for k, v in splits.items()},
        "same_design_dropped": dropped_faces,
        "not_covered": {face: len(missing) for face, missing in lacking.items()},
        "duplicates_dropped": {
            f"U+{cp:04X}": (f"U+{tw:04X}" if tw >= 0 else "blank") for cp, tw in sorted(dropped.items())
        },
    }
    return _Plan("glyphs", cps, groups, group_names, splits, per_split, placement, source)


def _like_plan(like: str, faces: list[Face], per_split: dict, placement: str, dropped_faces: list[str]) -> _Plan:
    """Another dataset's classes (and known groups) from these faces, all into the test split; a
    face lacking one of its characters is refused, naming it."""
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
