"""Per-patient QC pictures (crop montages, registration overlays, exclusion notes) as PNG.

These pictures are drawn once per patient, in short per-patient jobs, so they are composed as
arrays and written with Pillow instead of matplotlib: importing matplotlib and laying out a
figure cost ~1.5 CPU s per job (more than the crop itself; ``bench/bench_preprocess.py``),
i.e. ~7 CPU min over the default study's crop and margin jobs. Cohort-level figures (ROC,
decision curves, Kaplan-Meier, ...) stay with matplotlib.

Pure functions over arrays (:func:`window`, :func:`outline`, :func:`overlay`,
:func:`montage`) and one file edge (:func:`save_png`). Text on the pictures is the pseudonym
and fixed labels only; the PNGs carry no metadata chunks.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from recur.io import atomic_path

#: Outline colours (RGB).
RED = (230, 40, 40)
YELLOW = (250, 220, 30)
CYAN = (30, 220, 230)

_BACKGROUND = 255
_LABEL_HEIGHT = 14


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


def montage(
    panels: Sequence[Sequence[np.ndarray]],
    title: str = "",
    col_labels: Sequence[str] = (),
    row_labels: Sequence[str] = (),
    gap: int = 4,
):
    """A Pillow RGB image of ``panels`` (rows of (H, W, 3) uint8 arrays of one size) on a white
    background, with a title line, column labels above the first row and row labels left of
    the first column."""
    from PIL import Image, ImageDraw

    rows = [list(r) for r in panels]
    if not rows or not rows[0]:
        raise ValueError("montage needs at least one panel")
    h, w = rows[0][0].shape[:2]
    if any(p.shape[:2] != (h, w) for r in rows for p in r):
        raise ValueError("montage panels must all have the same size")
    n_cols = max(len(r) for r in rows)
    left = 8 * max((len(s) for s in row_labels), default=0) + (gap if row_labels else 0)
    top = _LABEL_HEIGHT * ((1 if title else 0) + (1 if col_labels else 0)) + gap
    width = left + n_cols * w + (n_cols + 1) * gap
    height = top + len(rows) * h + (len(rows) + 1) * gap
    canvas = np.full((height, width, 3), _BACKGROUND, dtype=np.uint8)
    for i, r in enumerate(rows):
        for j, p in enumerate(r):
            y = top + gap + i * (h + gap)
            x = left + gap + j * (w + gap)
            canvas[y : y + h, x : x + w] = p if p.ndim == 3 else p[..., None]
    image = Image.fromarray(canvas, mode="RGB")
    draw = ImageDraw.Draw(image)
    if title:
        draw.text((gap, 1), title, fill=(0, 0, 0))
    label_y = top - _LABEL_HEIGHT
    for j, text in enumerate(col_labels):
        draw.text((left + gap + j * (w + gap) + 2, label_y), text, fill=(0, 0, 0))
    for i, text in enumerate(row_labels):
        draw.text((2, top + gap + i * (h + gap) + h // 2 - 5), text, fill=(0, 0, 0))
    return image


def text_image(lines: Sequence[str], width: int = 640):
    """A white Pillow image holding ``lines`` of text (the first one is the heading)."""
    from PIL import Image, ImageDraw

    height = _LABEL_HEIGHT * (len(lines) + 1)
    image = Image.new("RGB", (width, height), (255, 255, 255))
    draw = ImageDraw.Draw(image)
    for i, line in enumerate(lines):
        draw.text((6, 4 + i * _LABEL_HEIGHT), line, fill=(160, 0, 0) if i == 0 else (0, 0, 0))
    return image


def save_png(image, path: str | Path) -> None:
    """Write a Pillow image as PNG atomically, with no text or time metadata."""
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        image.save(fh, format="PNG", optimize=False)
