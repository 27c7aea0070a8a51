"""File edges of the margin stage: read images, masks and transforms, write the results.

:func:`register_files` (post DP onto pre DP: the transform, the zone on the pre grid, QC),
:func:`metrics_files` (one patient's margin JSON and surface margins, read back by
:func:`load_surface`) and :func:`table_files` (``margin.csv`` and the cohort figure). The
science is in :mod:`recur.margin.registration`, :mod:`recur.margin.masks` and
:mod:`recur.margin.metrics`.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import SimpleITK as sitk

if TYPE_CHECKING:  # pandas is imported where used: per-patient jobs do not need it
    import pandas as pd

from recur.errors import RecurError
from recur.io import atomic_path, read_image, read_transform, write_text_atomic
from recur.margin.masks import binary_mask, roi_slices, zone_on_pre
from recur.margin.metrics import MarginMetrics, SurfaceMargins, margin_table
from recur.margin.plots import plot_cohort_margins, plot_registration_qc
from recur.margin.registration import CrossTimeRegistration
from recur.margin.settings import CrossTimeSettings, MarginMetricSettings


def _read(path: str | Path, patient: str, what: str, root: str | Path | None = None) -> sitk.Image:
    p = Path(path)
    try:
        rel = p.relative_to(root) if root else p
    except ValueError:
        rel = p
    return read_image(p, who=f"patient {patient}", what=what, shown=str(rel))


def _check_same_grid(a: sitk.Image, b: sitk.Image, patient: str, what: str) -> None:
    same = (
        a.GetSize() == b.GetSize()
        and np.allclose(a.GetSpacing(), b.GetSpacing(), rtol=1e-4)
        and np.allclose(a.GetOrigin(), b.GetOrigin(), atol=1e-3 * max(a.GetSpacing()))
        and np.allclose(a.GetDirection(), b.GetDirection(), atol=1e-4)
    )
    if not same:
        raise RecurError(f"patient {patient}: {what} is not on the grid of its DP series")


def register_files(
    pre_dp: str | Path,
    post_dp: str | Path,
    pre_mask: str | Path,
    post_mask: str | Path,
    out_tfm: str | Path,
    out_mask: str | Path,
    settings: CrossTimeSettings,
    qc_png: str | Path | None = None,
    qc_json: str | Path | None = None,
    patient: str = "?",
) -> dict[str, float | int | str]:
    """Register post DP onto pre DP, write the transform, the zone on the pre grid and QC."""
    pre = _read(pre_dp, patient, "pre DP")
    post = _read(post_dp, patient, "post DP")
    tumour = binary_mask(_read(pre_mask, patient, "pre tumour mask"))
    zone = binary_mask(_read(post_mask, patient, "post ablation-zone mask"))
    _check_same_grid(pre, tumour, patient, f"pre tumour mask {Path(pre_mask).name}")
    _check_same_grid(post, zone, patient, f"post ablation-zone mask {Path(post_mask).name}")
    if roi_slices(tumour).size == 0:
        raise RecurError(f"patient {patient}: pre tumour mask {Path(pre_mask).name} is empty")
    if roi_slices(zone).size == 0:
        raise RecurError(
            f"patient {patient}: post ablation-zone mask {Path(post_mask).name} is empty"
        )
    try:
        result = CrossTimeRegistration(settings)(pre, post, tumour, zone)
    except RuntimeError as exc:
        last = str(exc).strip().splitlines()[-1] if str(exc).strip() else "failed"
        raise RecurError(f"patient {patient}: post-to-pre registration failed ({last})") from None
    zone_pre = zone_on_pre(zone, tumour, result.transform, settings.zone_interpolation)
    qc = {"patient_id": patient, **result.qc}
    qc["zone_voxels_on_pre"] = int((sitk.GetArrayViewFromImage(zone_pre) > 0).sum())
    if qc["zone_voxels_on_pre"] == 0:
        raise RecurError(
            f"patient {patient}: the ablation zone falls outside the pre image after "
            "registration (check the post DP series and mask)"
        )
    post_on_pre = result.post_on_pre
    # everything computed: write
    with atomic_path(out_tfm) as tmp:
        sitk.WriteTransform(result.transform, str(tmp))
    with atomic_path(out_mask) as tmp:
        sitk.WriteImage(zone_pre, str(tmp), useCompression=True)
    if qc_png:
        plot_registration_qc(pre, post_on_pre, tumour, zone_pre, patient, qc_png)
    if qc_json:
        write_text_atomic(qc_json, json.dumps(qc, indent=2, sort_keys=True) + "\n")
    return qc


def metrics_files(
    tumour: str | Path,
    zone: str | Path,
    out_json: str | Path,
    out_surface: str | Path | None,
    settings: MarginMetricSettings,
    transform: str | Path | None = None,
    patient: str = "?",
) -> dict[str, float | int | str]:
    """Margin metrics of one patient from mask files; write JSON (and the surface margins).

    Without ``transform`` both masks lie on the pre grid; with it (the ``.tfm`` written by
    :func:`register_files`) ``zone`` is the post ablation-zone mask on its own grid.
    """
    t = binary_mask(_read(tumour, patient, "tumour mask"))
    z = binary_mask(_read(zone, patient, "ablation-zone mask"))
    tx = None
    if transform is not None:
        tx = read_transform(transform, who=f"patient {patient}")
    try:
        sm = MarginMetrics(settings)(t, z, tx)
    except ValueError as exc:
        raise RecurError(f"patient {patient}: margin of {Path(zone).name}: {exc}") from None
    rec: dict[str, float | int | str] = {"patient_id": patient, **sm.summary()}
    rec["slices_2d"] = " ".join(str(k) for k in sm.slices)
    rec["iso_spacing_mm"] = settings.iso_spacing_mm if sm.mode == "3d" else None
    rec["smooth_voxels"] = settings.smooth_voxels
    if out_surface:
        with atomic_path(out_surface) as tmp, open(tmp, "wb") as f:
            np.savez_compressed(
                f,
                margins_mm=sm.margins_mm.astype(np.float32),
                weights=sm.weights.astype(np.float32),
                mode=np.array(sm.mode),
            )
    write_text_atomic(out_json, json.dumps(rec, indent=2, sort_keys=True) + "\n")
    return rec


def load_surface(path: str | Path) -> SurfaceMargins:
    """Read a surface-margin file written by :func:`metrics_files`."""
    with np.load(path, allow_pickle=False) as d:
        return SurfaceMargins(
            d["margins_mm"].astype(float), d["weights"].astype(float), str(d["mode"])
        )


def table_files(
    metrics: Sequence[str | Path],
    out: str | Path,
    figure: str | Path | None = None,
    figure_pdf: str | Path | None = None,
) -> pd.DataFrame:
    """Gather per-patient metric JSONs into ``margin.csv`` (and the cohort figure: PNG
    ``figure``, PDF ``figure_pdf``)."""
    recs = []
    for p in metrics:
        try:
            recs.append(json.loads(Path(p).read_text(encoding="utf-8")))
        except (OSError, json.JSONDecodeError) as exc:
            raise RecurError(f"{Path(p).name}: cannot read margin metrics ({exc})") from None
    table = margin_table(recs)
    with atomic_path(out) as tmp:
        table.to_csv(tmp, index=False, float_format="%.4g")
    if figure:
        plot_cohort_margins(table, figure, figure_pdf)
    return table
