"""Type faces and character sets for the glyph importer (:mod:`specens.data.glyphs`).

- :func:`find_faces` turns font files and folders (TrueType / OpenType, collections face by face)
  into :class:`Face` objects; a file that is not a font is a :class:`DataError` naming it.
- :func:`one_per_design` keeps one face of each design: the regional variants of a CJK design
  (Noto Sans CJK SC / TC / JP / KR / HK, AR PL UKai CN / TW / HK) draw the same characters the
  same way, so they count as one face.
- :func:`charset` gives the code points of a character set: ``gb2312-1`` (GB2312 level 1, the
  3,755 most frequent hanzi: rows 16-55), ``gb2312`` (all 6,763 hanzi of GB2312: rows 16-87),
  both enumerated by Python's own ``gb2312`` codec, or a UTF-8 text file of characters.
- :func:`assign_splits` spreads the faces over train / validation / test by style (hei / sans,
  song / ming / serif, kai, fangsong, mono, other), seeded, so that every split sees every style
  it can and test faces are never seen in training.
"""

from __future__ import annotations

import os
import re
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import numpy as np

from specens.core.errors import DataError

FONT_SUFFIXES = (".ttf", ".otf", ".ttc", ".otc")
_REGIONS = re.compile(r"\b(SC|TC|JP|KR|HK|CN|TW|MO|MBE|GB|Big5)\b")


@dataclass(frozen=True)
class Face:
    """One face of a font file: ``index`` is its position in a collection (0 for a plain file)."""

    path: str
    index: int
    family: str
    style: str

    @property
    def name(self) -> str:
        """``"Noto Serif CJK SC Bold"``: family and style (the style left out when Regular)."""
        return self.family if self.style.lower() in ("regular", "book", "") else f"{self.family} {self.style}"

    def to_json(self) -> dict:
        return {"name": self.name, "file": os.path.basename(self.path), "index": self.index}


def find_faces(paths: Sequence[str | os.PathLike]) -> list[Face]:
    """Every face of the font files named, or found (recursively, by suffix) in the folders
    named, in path order. Raises :class:`DataError` naming a path that does not exist, a folder
    without fonts, or a file that cannot be read as a font."""
    from fontTools.ttLib import TTCollection, TTFont, TTLibError

    faces: list[Face] = []
    for p in map(Path, paths):
        if p.is_dir():
            files = sorted(f for f in p.rglob("*") if f.suffix.lower() in FONT_SUFFIXES and f.is_file())
            if not files:
                raise DataError(f"{p}: no font files ({', '.join(FONT_SUFFIXES)}) in this folder")
        elif p.is_file():
            files = [p]
        else:
            raise DataError(f"{p}: no such font file or folder")
        for f in files:
            try:
                if f.suffix.lower() in (".ttc", ".otc"):
                    fonts = TTCollection(str(f), lazy=True).fonts
                else:
                    fonts = [TTFont(str(f), lazy=True)]
                for i, font in enumerate(fonts):
                    names = font["name"]
                    faces.append(
                        Face(str(f), i, names.getBestFamilyName() or f.stem, names.getBestSubFamilyName() or "Regular")
                    )
            except (TTLibError, OSError, KeyError, AssertionError, ValueError, IndexError) as e:
                raise DataError(f"{f}: cannot be read as a font ({type(e).__name__}: {e})") from None
    return faces


def design_key(face: Face) -> tuple[str, str]:
    """What identifies a design: the family without its region tag, and the style."""
    family = re.sub(r"\s+", " ", _REGIONS.sub("", face.family)).strip()
    return family, face.style.lower()


def one_per_design(faces: Sequence[Face], prefer: Sequence[str] = ("SC", "CN", "GB")) -> tuple[list[Face], list[Face]]:
    """(kept, dropped): of the faces sharing a :func:`design_key`, the one whose family carries
    the first region tag of ``prefer`` (simplified Chinese), else the first; in input order."""
    by_key: dict[tuple[str, str], list[Face]] = {}
    for f in faces:
        by_key.setdefault(design_key(f), []).append(f)

    def rank(f: Face) -> int:
        tags = _REGIONS.findall(f.family)
        return next((i for i, t in enumerate(prefer) if t in tags), len(prefer))

    chosen = {min(group, key=rank) for group in by_key.values()}
    return [f for f in faces if f in chosen], [f for f in faces if f not in chosen]


@cache
def _cmap(path: str, index: int) -> frozenset[int]:
    """The code points face ``index`` of ``path`` maps to a glyph; a file whose ``cmap`` table
    (read lazily, only now) cannot be decoded is a :class:`DataError` naming it."""
    from fontTools.ttLib import TTCollection, TTFont, TTLibError

    try:
        font = (
            TTCollection(path, lazy=True).fonts[index]
            if path.lower().endswith((".ttc", ".otc"))
            else TTFont(path, lazy=True)
        )
        cmap = font.getBestCmap() or {}
    except (TTLibError, OSError, KeyError, AssertionError, ValueError, IndexError, struct.error) as e:
        raise DataError(f"{path}: its character map (cmap table) cannot be read ({type(e).__name__}: {e})") from None
    return frozenset(cp for cp, glyph in cmap.items() if glyph != ".notdef")


def covered(faces: Sequence[Face], code_points: Sequence[int]) -> tuple[list[int], dict[str, list[int]]]:
    """(the code points every face maps, {face name: the code points it lacks})."""
    lacking = {}
    common = set(code_points)
    for f in faces:
        cmap = _cmap(f.path, f.index)
        missing = [cp for cp in code_points if cp not in cmap]
        if missing:
            lacking[f.name] = missing
        common -= set(missing)
    return [cp for cp in code_points if cp in common], lacking


CHARSETS = ("letters", "gb2312-1", "gb2312")


def charset(name: str) -> list[int]:
    """Code points of a character set (see the module docstring), ascending for the GB2312 sets,
    in file order (duplicates and whitespace dropped) for a file. ``letters`` is the embedded
    glyphs' own set and is handled by :mod:`specens.data.glyphs`."""
    if name in ("gb2312-1", "gb2312"):
        last_row = 55 if name == "gb2312-1" else 87
        out = []
        for row in range(16, last_row + 1):
            for col in range(1, 95):
                try:
                    out.append(ord(bytes([0xA0 + row, 0xA0 + col]).decode("gb2312")))
                except UnicodeDecodeError:
                    continue  # row 55 ends at column 89
        return out
    path = Path(name)
    if not path.is_file():
        raise DataError(f"charset {name!r}: not one of {list(CHARSETS)} and not a file of characters")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise DataError(f"{path}: not UTF-8 text ({e})") from None
    cps = list(dict.fromkeys(ord(c) for c in text if not c.isspace()))
    if len(cps) < 2:
        raise DataError(f"{path}: holds {len(cps)} distinct characters; a character set needs at least 2")
    return cps


_STYLES = (
    ("kai", ("kai",)),
    ("fangsong", ("fang",)),
    ("mono", ("mono",)),
    ("serif", ("serif", "song", "sung", "ming", "mincho")),
    ("sans", ("sans", "hei", "gothic", "yuan")),
)


def style_of(face: Face) -> str:
    """A face's style family from its name: kai, fangsong, mono, serif (song / ming), sans (hei), or other."""
    name = face.name.lower()
    return next((style for style, words in _STYLES if any(w in name for w in words)), "other")


def assign_splits(faces: Sequence[Face], seed: int = 0, val: int = 0, test: int = 0) -> dict[str, list[Face]]:
    """Disjoint train / val / test faces, the styles spread: within each style the faces are put
    in a seeded order, and test, then validation, take one face of each style in turn (largest
    style first) until they hold ``test`` / ``val`` faces (0: about 15% and 10% of the faces, at
    least one each); a style keeps at least one face for training while it has one to spare."""
    n = len(faces)
    test = test or max(1, round(0.15 * n))
    val = val or max(1, round(0.10 * n))
    if n < 3 or test + val >= n:
        raise DataError(
            f"{n} faces cannot be split into {test} test, {val} validation and at least one training "
            "face; give more fonts"
        )
    rng = np.random.default_rng(seed)
    by_style: dict[str, list[Face]] = {}
    for f in faces:
        by_style.setdefault(style_of(f), []).append(f)
    pools = {s: [fs[i] for i in rng.permutation(len(fs))] for s, fs in by_style.items()}
    order = sorted(pools, key=lambda s: (-len(pools[s]), s))
    out: dict[str, list[Face]] = {"test": [], "val": []}
    for split, want in (("test", test), ("val", val)):
        while len(out[split]) < want:
            spare = [s for s in order if len(pools[s]) > 1] or [s for s in order if pools[s]]
            for s in spare:
                if len(out[split]) < want:
                    out[split].append(pools[s].pop())
    out["train"] = [f for s in order for f in pools[s]]
    return {
        k: sorted(v, key=faces.index) for k, v in (("train", out["train"]), ("val", out["val"]), ("test", out["test"]))
    }


def cmap_of(face: Face) -> frozenset[int]:
    """The code points ``face`` maps to a glyph."""
    return _cmap(face.path, face.index)


def splits_by_name(
    faces: Sequence[Face], val_faces: Sequence[str], test_faces: Sequence[str], seed: int
) -> dict[str, list[Face]]:
    """The faces of each split: those named for validation and test (exactly, else as substrings
    of face names), the rest for training; with none named, :func:`assign_splits`'s seeded rule."""
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
