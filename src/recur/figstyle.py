"""The look shared by every figure of the study: one style per model, the colour-blind-safe
palette, and deterministic PNG + PDF files.

:func:`model_style` gives each model a colour of the Okabe–Ito palette (Okabe & Ito 2008,
*Color Universal Design*; distinguishable with the common colour-vision deficiencies), a line
style and a marker, so curves stay apart in greyscale print as well. The four models of the
paper always get the same style (:data:`recur.constants.MODELS_PAPER_ORDER` holds slots 0-3);
any other model takes the next free slot in the order the figure lists it. Slot ``i`` has
colour ``i mod 8`` and line style ``(i + i // 8) mod 8``: beyond eight models the colours
repeat with another dash pattern, so the (colour, line style) pairs of up to 64 models differ.

:func:`save_figure` writes a matplotlib figure as PNG (150 dpi) and PDF without software or
date metadata. Plots (curves, bars, text) are stored as a 256-colour palette PNG: a
matplotlib plot has a few hundred distinct colours, mostly anti-aliasing shades, so the
picture looks the same at about a third of the bytes (the report embeds every figure). Figures
that show images (Grad-CAM) keep full colour (``palette=False``): a palette would band their
continuous maps. The PDF beside each PNG is the print version. The module imports matplotlib
and Pillow only inside :func:`save_figure`, so the stages without scikit-learn (margin,
deep-learning models) share it.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from recur.constants import FIGURE_DPI, MODELS_PAPER_ORDER, PALETTE_COLOURS
from recur.io import atomic_path

if TYPE_CHECKING:
    from matplotlib.figure import Figure

#: The Okabe–Ito palette by name (black and yellow are used last: yellow is faint on white).
OKABE_ITO: dict[str, str] = {
    "blue": "#0072B2",
    "orange": "#E69F00",
    "bluish_green": "#009E73",
    "vermillion": "#D55E00",
    "reddish_purple": "#CC79A7",
    "sky_blue": "#56B4E9",
    "black": "#000000",
    "yellow": "#F0E442",
}
#: Model colours by slot: Clinical blue, Pre orange, PrePost bluish green, DL_Clinical
#: vermillion, then reddish purple, sky blue, black, yellow.
MODEL_COLOURS: tuple[str, ...] = tuple(OKABE_ITO.values())
#: Line styles by slot (matplotlib dash tuples): Clinical dashed, Pre dash-dot, PrePost
#: dotted, DL_Clinical solid, then long dash, dash-dot-dot, short dash, loose dash-dot.
LINESTYLES: tuple[object, ...] = (
    (0, (5, 2)),
    (0, (6, 2, 1, 2)),
    (0, (1, 1.5)),
    "-",
    (0, (10, 3)),
    (0, (6, 2, 1, 2, 1, 2)),
    (0, (2, 2)),
    (0, (3, 4, 1, 4)),
)
#: Markers by slot (drawn sparsely on curves, or as the points of a point plot).
MARKERS: tuple[str, ...] = ("o", "s", "^", "D", "v", "P", "X", "*")
#: The two risk groups of the Kaplan–Meier panels.
RISK_GROUP_STYLES: dict[str, dict[str, object]] = {
    "Low risk": {"color": OKABE_ITO["blue"], "linestyle": (0, (5, 2))},
    "High risk": {"color": OKABE_ITO["vermillion"], "linestyle": "-"},
}


def model_slot(model: str, models: Sequence[str] = ()) -> int:
    """The style slot of ``model``: its place in the paper's order for the four paper models,
    else 4 + its rank among the other models of ``models`` (appended when not listed)."""
    if model in MODELS_PAPER_ORDER:
        return MODELS_PAPER_ORDER.index(model)
    others = [m for m in dict.fromkeys(models) if m not in MODELS_PAPER_ORDER]
    if model not in others:
        others.append(model)
    return len(MODELS_PAPER_ORDER) + others.index(model)


def model_style(model: str, models: Sequence[str] = ()) -> dict[str, object]:
    """``color``, ``linestyle`` and ``marker`` of ``model`` in a figure of ``models``
    (keyword arguments of ``Axes.plot``)."""
    i = model_slot(model, models)
    n = len(MODEL_COLOURS)
    return {
        "color": MODEL_COLOURS[i % n],
        "linestyle": LINESTYLES[(i + i // n) % len(LINESTYLES)],
        "marker": MARKERS[(i + i // n) % len(MARKERS)],
    }


def save_figure(
    fig: Figure,
    png: str | Path,
    pdf: str | Path | None = None,
    *,
    palette: bool = True,
    dpi: int = FIGURE_DPI,
) -> None:
    """Write ``fig`` as PNG (and PDF) atomically, without metadata; then close it.

    ``palette``: store the PNG with a 256-colour palette (plots); ``False`` for figures that
    show images with continuous colour maps. ``dpi``: the PNG's resolution."""
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    try:
        with atomic_path(png) as tmp:
            if palette:
                from PIL import Image

                buffer = io.BytesIO()
                fig.savefig(buffer, format="png", dpi=dpi)
                buffer.seek(0)
                with Image.open(buffer) as rendered:
                    quantised = rendered.convert("RGB").quantize(
                        colors=PALETTE_COLOURS,
                        method=Image.Quantize.MEDIANCUT,
                        dither=Image.Dither.NONE,
                    )
                quantised.save(tmp, format="png", optimize=True)
            else:
                fig.savefig(tmp, format="png", dpi=dpi, metadata={"Software": None})
        if pdf is not None:
            with atomic_path(pdf) as tmp:
                fig.savefig(
                    tmp,
                    format="pdf",
                    metadata={"Creator": None, "Producer": None, "CreationDate": None},
                )
    finally:
        plt.close(fig)
