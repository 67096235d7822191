"""Rendering characters: one character from a face as a greyscale image, clean or augmented
(:func:`render`), every sample of many classes in parallel processes (:func:`render_classes`),
and which faces draw the same design (:func:`distinct_faces`).

Faces are the embedded DejaVu faces by name or :class:`~specens.data.fonts.Face` s from users'
font files; :mod:`specens.data.glyphs` decides what to render and writes the dataset.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from functools import cache

import matplotlib
import numpy as np
from PIL import Image, ImageDraw, ImageFont

from .fonts import Face

_CANVAS = 64  # glyphs are drawn at 2x and 1x of a 32-pixel output, then downsampled


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


def render_classes(jobs, workers, advance) -> list[np.ndarray]:
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
