"""Per-patient QC pictures (crop montages, registration overlays, exclusion notes) as PNG.

These pictures are drawn once per patient, in short per-patient jobs, so they are composed as
arrays and written with Pillow instead of matplotlib: importing matplotlib and laying out a
figure cost ~1.5 CPU s per job (more than the crop itself; ``bench/bench_preprocess.py``),
i.e. ~7 CPU min over the default study's crop and margin jobs. Cohort-level figures (ROC,
decision curves, Kaplan-Meier, ...) stay with matplotlib.

Pure functions over arrays (:func:`window`, :func:`outline`, :func:`overlay`,
:func:`montage`, :func:`scale_bar`, :func:`orientation_letters`, :func:`orientation_note`)
and one file edge
(:func:`save_png`). Text is set in Pillow's default font at :data:`FONT_SIZE` px (FreeType;
the fixed bitmap font where Pillow has no FreeType). A montage can carry a scale bar and the
patient's orientation on the first panel of each row, and a note line under the panels. Text
on the pictures is the pseudonym and fixed labels only; the PNGs carry no metadata chunks.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import cache
from pathlib import Path

import numpy as np

from recur.io import atomic_path

#: Outline colours (RGB).
RED = (230, 40, 40)
YELLOW = (250, 220, 30)
CYAN = (30, 220, 230)
#: Height (px) of the text of the pictures.
FONT_SIZE = 14
#: Scale-bar lengths (mm) to choose from: the longest that fits :data:`SCALE_BAR_FRACTION` of
#: a panel's width.
SCALE_BAR_LENGTHS_MM: tuple[float, ...] = (1, 2, 5, 10, 20, 50, 100)
SCALE_BAR_FRACTION = 0.3
#: The orientation letter of each LPS axis: (the + direction, the - direction).
_LPS_LETTERS = (("L", "R"), ("P", "A"), ("S", "I"))

_BACKGROUND = 255
_SMALL_PANEL = 120
_INK = (0, 0, 0)
_MARK = (255, 255, 255)


@cache
def _font(size: int = FONT_SIZE):
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)
    except (TypeError, ValueError, OSError):  # no FreeType: the fixed bitmap font
        return ImageFont.load_default()


def text_width(text: str, size: int = FONT_SIZE) -> int:
    """Width (px) of ``text`` in the pictures' font."""
    if not text:
        return 0
    left, _, right, _ = _font(size).getbbox(text)
    return int(right - left)


def line_height(size: int = FONT_SIZE) -> int:
    """Height (px) of one line of text, with 3 px of leading."""
    bottom = _font(size).getbbox("Ag")[3]
    return int(bottom) + 3


def _text(draw, xy: tuple[int, int], text: str, fill=_INK, stroke: bool = False) -> None:
    from PIL import ImageFont

    font = _font()
    if stroke and isinstance(font, ImageFont.FreeTypeFont):
        draw.text(xy, text, fill=fill, font=font, stroke_width=2, stroke_fill=_INK)
    else:
        draw.text(xy, text, fill=fill, font=font)


def window(image: np.ndarray, low_pct: float = 1.0, high_pct: float = 99.0) -> np.ndarray:
    """A 2-D image as uint8 grey levels between its ``low_pct`` and ``high_pct`` percentiles
    (clipped outside; a constant image is black)."""
    a = np.asarray(image, dtype=np.float64)
    if a.ndim != 2:
        raise ValueError(f"window expects a 2-D image, got shape {a.shape}")
    if a.size == 0:
        return np.zeros(a.shape, dtype=np.uint8)
    lo, hi = np.percentile(a, [low_pct, high_pct])
    if not hi > lo:
        return np.zeros(a.shape, dtype=np.uint8)
    return np.round(np.clip((a - lo) / (hi - lo), 0.0, 1.0) * 255.0).astype(np.uint8)


def outline(mask: np.ndarray) -> np.ndarray:
    """The one-pixel inner contour of a 2-D binary mask (SimpleITK's BinaryContour, fully
    connected), as a bool array of the same shape."""
    import SimpleITK as sitk

    m = np.asarray(mask) > 0
    if m.ndim != 2:
        raise ValueError(f"outline expects a 2-D mask, got shape {m.shape}")
    if not m.any():
        return m
    img = sitk.GetImageFromArray(m.astype(np.uint8))
    contour = sitk.BinaryContour(img, fullyConnected=True, backgroundValue=0, foregroundValue=1)
    return sitk.GetArrayFromImage(contour) > 0


def overlay(grey: np.ndarray, outlines: Sequence[tuple[np.ndarray, tuple[int, int, int]]] = ()):
    """RGB uint8 (H, W, 3) of a uint8 grey image with each ``(mask, colour)`` outlined."""
    g = np.asarray(grey, dtype=np.uint8)
    rgb = np.repeat(g[..., None], 3, axis=2)
    for mask, colour in outlines:
        edge = outline(mask)
        if edge.shape != g.shape:
            raise ValueError(f"mask shape {edge.shape} differs from the image's {g.shape}")
        rgb[edge] = colour
    return rgb


def upscale(panel: np.ndarray, factor: int) -> np.ndarray:
    """Nearest-neighbour enlargement of an (H, W[, 3]) array by an integer factor."""
    if factor < 1:
        raise ValueError("factor must be >= 1")
    return np.repeat(np.repeat(panel, factor, axis=0), factor, axis=1)


def scale_bar(width_px: int, mm_per_pixel: float) -> tuple[float, int]:
    """The scale bar of a panel ``width_px`` wide: ``(length_mm, length_px)``, the longest of
    :data:`SCALE_BAR_LENGTHS_MM` within :data:`SCALE_BAR_FRACTION` of the width (else the
    shortest)."""
    if not mm_per_pixel > 0:
        raise ValueError(f"mm_per_pixel must be > 0, got {mm_per_pixel}")
    room = SCALE_BAR_FRACTION * width_px * mm_per_pixel
    fits = [mm for mm in SCALE_BAR_LENGTHS_MM if mm <= room]
    mm = fits[-1] if fits else SCALE_BAR_LENGTHS_MM[0]
    return mm, max(round(mm / mm_per_pixel), 1)


def orientation_letters(direction: Sequence[float] | np.ndarray) -> tuple[str, str, str, str]:
    """The patient directions at the left, right, top and bottom edge of an axial slice shown
    as ``array[row, col]`` of an image with this (row-major 3x3, ITK/LPS) direction matrix:
    columns run along its first axis, rows along its second. The identity (and every image
    reoriented to LPS) gives ``("R", "L", "A", "P")``: the radiological view, the patient's
    left on the image's right."""
    d = np.asarray(direction, dtype=np.float64).reshape(3, 3)

    def letters(v: np.ndarray) -> tuple[str, str]:
        i = int(np.argmax(np.abs(v)))
        plus, minus = _LPS_LETTERS[i]
        return (minus, plus) if v[i] > 0 else (plus, minus)

    left, right = letters(d[:, 0])
    top, bottom = letters(d[:, 1])
    return left, right, top, bottom


_DIRECTION_NAMES = {
    "R": "patient's right",
    "L": "patient's left",
    "A": "anterior",
    "P": "posterior",
    "S": "superior",
    "I": "inferior",
}


def orientation_note(letters: Sequence[str]) -> str:
    """One line naming the patient direction of each edge, e.g. ``image left = patient's
    right (R), image right = patient's left (L), top = anterior (A), bottom = posterior (P)``."""
    edges = ("image left", "image right", "top", "bottom")
    return ", ".join(
        f"{edge} = {_DIRECTION_NAMES[x]} ({x})" for edge, x in zip(edges, letters, strict=True)
    )


def wrap(text: str, width: int) -> list[str]:
    """``text`` broken at spaces into lines at most ``width`` px wide (a longer word keeps a
    line of its own)."""
    lines: list[str] = []
    for word in text.split():
        if lines and text_width(f"{lines[-1]} {word}") <= width:
            lines[-1] = f"{lines[-1]} {word}"
        else:
            lines.append(word)
    return lines


def _per_row(value, n_rows: int) -> list:
    if value is None or np.isscalar(value):
        return [value] * n_rows
    values = list(value)
    if len(values) != n_rows:
        raise ValueError(f"expected one mm_per_pixel per row ({n_rows}), got {len(values)}")
    return values


def montage(
    panels: Sequence[Sequence[np.ndarray]],
    title: str = "",
    col_labels: Sequence[str] = (),
    row_labels: Sequence[str] = (),
    gap: int = 4,
    *,
    mm_per_pixel: float | Sequence[float] | None = None,
    orientation: Sequence[str] | None = None,
    note: str = "",
):
    """A Pillow RGB image of ``panels`` (rows of (H, W, 3) uint8 arrays of one size) on a white
    background, with a title line, column labels above the first row, row labels left of the
    first column and a ``note`` under the panels (wrapped to the panels' width).

    ``mm_per_pixel`` (one value, or one per row: the width of a displayed pixel in mm) adds a
    scale bar (:func:`scale_bar`) at the bottom left of each row's first panel;
    ``orientation`` (the letters at the left, right, top and bottom edge,
    :func:`orientation_letters`) marks those edges of each row's first panel.
    """
    from PIL import Image, ImageDraw

    rows = [list(r) for r in panels]
    if not rows or not rows[0]:
        raise ValueError("montage needs at least one panel")
    h, w = rows[0][0].shape[:2]
    if any(p.shape[:2] != (h, w) for r in rows for p in r):
        raise ValueError("montage panels must all have the same size")
    scales = _per_row(mm_per_pixel, len(rows))
    if orientation is not None and len(orientation) != 4:
        raise ValueError("orientation needs four letters: left, right, top, bottom")
    lh = line_height()
    n_cols = max(len(r) for r in rows)
    left = max((text_width(s) for s in row_labels), default=0) + (2 * gap if row_labels else 0)
    top = lh * ((1 if title else 0) + (1 if col_labels else 0)) + gap
    width = left + n_cols * w + (n_cols + 1) * gap
    width = max(width, text_width(title) + 2 * gap)
    notes = wrap(note, width - 2 * gap)
    height = top + len(rows) * h + (len(rows) + 1) * gap + (lh * len(notes) + gap if notes else 0)
    canvas = np.full((height, width, 3), _BACKGROUND, dtype=np.uint8)
    for i, r in enumerate(rows):
        for j, p in enumerate(r):
            y = top + gap + i * (h + gap)
            x = left + gap + j * (w + gap)
            canvas[y : y + h, x : x + w] = p if p.ndim == 3 else p[..., None]
    image = Image.fromarray(canvas, mode="RGB")
    draw = ImageDraw.Draw(image)
    if title:
        _text(draw, (gap, 1), title)
    label_y = top - lh
    for j, text in enumerate(col_labels):
        _text(draw, (left + gap + j * (w + gap) + 2, label_y), text)
    for i, text in enumerate(row_labels):
        _text(draw, (gap, top + gap + i * (h + gap) + (h - lh) // 2), text)
    for i in range(len(rows)):
        x0, y0 = left + gap, top + gap + i * (h + gap)
        if scales[i] is not None:
            _draw_scale_bar(draw, x0, y0, w, h, float(scales[i]))
        if orientation is not None:
            _draw_orientation(draw, x0, y0, w, h, orientation)
    for i, line in enumerate(notes):
        _text(draw, (gap, height - lh * (len(notes) - i) - gap // 2), line)
    return image


def _draw_scale_bar(draw, x0: int, y0: int, w: int, h: int, mm_per_pixel: float) -> None:
    """A white bar with a black rim, and its length in mm above it, at the bottom left."""
    mm, px = scale_bar(w, mm_per_pixel)
    bx, by = x0 + 6, y0 + h - 8
    draw.rectangle((bx - 1, by - 1, bx + px, by + 3), fill=_INK)
    draw.rectangle((bx, by, bx + px - 1, by + 2), fill=_MARK)
    _text(draw, (bx, by - line_height() - 1), f"{mm:g} mm", fill=_MARK, stroke=True)


def _draw_orientation(draw, x0: int, y0: int, w: int, h: int, letters: Sequence[str]) -> None:
    """The orientation letters at the middle of the left, right, top and bottom edges (left
    and right only on a panel under :data:`_SMALL_PANEL` px high, where the scale bar needs
    the bottom)."""
    lh = line_height()
    left, right, top, bottom = letters
    _text(draw, (x0 + 3, y0 + (h - lh) // 2), left, fill=_MARK, stroke=True)
    _text(draw, (x0 + w - text_width(right) - 4, y0 + (h - lh) // 2), right, _MARK, stroke=True)
    if h < _SMALL_PANEL:
        return
    _text(draw, (x0 + (w - text_width(top)) // 2, y0 + 2), top, fill=_MARK, stroke=True)
    # the bottom letter sits right of the middle, clear of the scale bar
    bx = x0 + max((w - text_width(bottom)) // 2, w // 2)
    _text(draw, (bx, y0 + h - lh - 2), bottom, fill=_MARK, stroke=True)


def text_image(lines: Sequence[str], width: int = 640):
    """A white Pillow image holding ``lines`` of text (the first one is the heading)."""
    from PIL import Image, ImageDraw

    lh = line_height()
    width = max(width, *(text_width(s) + 12 for s in lines)) if lines else width
    height = lh * (len(lines) + 1)
    image = Image.new("RGB", (width, height), (255, 255, 255))
    draw = ImageDraw.Draw(image)
    for i, line in enumerate(lines):
        _text(draw, (6, 4 + i * lh), line, fill=(160, 0, 0) if i == 0 else _INK)
    return image


def save_png(image, path: str | Path) -> None:
    """Write a Pillow image as PNG atomically, with no text or time metadata."""
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        image.save(fh, format="PNG", optimize=False)
