"""The file edge of the crops: read one patient's registered phases and checked masks, crop
both time points (:mod:`recur.preprocess.crops`) and write the ``.npz`` and the QC montage."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from recur.constants import PHASES, TIMEPOINTS
from recur.errors import RecurError
from recur.io import atomic_path, read_image, read_transform
from recur.preprocess.crops import (
    CropSettings,
    TimepointCrop,
    crop_carried,
    crop_timepoint,
)


# --------------------------------------------------------------------------- file edges
def _read(path: Path, who: str) -> sitk.Image:
    return read_image(path, who=who, what="image", volume=False)


def qc_montage(
    crops: np.ndarray,
    masks: np.ndarray,
    title: str,
    path: str | Path,
    spacing: np.ndarray | None = None,
) -> None:
    """Save a PNG: rows = time points, columns = phases, middle slice, ROI outlined in red.

    The crops are in the LPS frame (:mod:`recur.preprocess.crops`), so the first panel of each
    row is marked R (image left), L (image right), A (top) and P (bottom): the radiological
    view, the patient's left on the image's right. ``spacing`` ((time points, 3) mm, column,
    row and slice spacing of each time point's crops) adds a scale bar to each row. The title
    is the pseudonym only and the PNG carries no metadata chunks.
    """
    from recur.preprocess import qc_images

    n_t, n_p = crops.shape[:2]
    factor = 2 if crops.shape[-1] <= 160 else 1
    rows = [
        [
            qc_images.upscale(
                qc_images.overlay(qc_images.window(crops[t, p, 1]), [(masks[t, 1], qc_images.RED)]),
                factor,
            )
            for p in range(n_p)
        ]
        for t in range(n_t)
    ]
    letters = qc_images.orientation_letters(np.eye(3))  # LPS
    mm_per_pixel = None if spacing is None else [float(sp[0]) / factor for sp in spacing]
    image = qc_images.montage(
        rows,
        title=title,
        col_labels=[PHASES[p] if p < len(PHASES) else str(p) for p in range(n_p)],
        row_labels=[TIMEPOINTS[t] if t < len(TIMEPOINTS) else str(t) for t in range(n_t)],
        mm_per_pixel=mm_per_pixel,
        orientation=letters,
        note=qc_images.orientation_note(letters),
    )
    qc_images.save_png(image, path)


def crop_patient_files(
    patient: str,
    registered: Mapping[str, str | Path],
    masks: Mapping[str, str | Path],
    out: str | Path,
    qc_png: str | Path | None,
    settings: CropSettings,
    post_to_pre: str | Path | None = None,
    timepoints: Sequence[str] = TIMEPOINTS,
) -> dict[str, TimepointCrop]:
    """Crop both time points of one patient and write ``out`` (.npz) and ``qc_png``.

    ``timepoints=("pre",)`` crops the pre-ablation time point alone (``recur predict``'s
    patient without a post-ablation series): the arrays then hold one time point, which the
    Pre model reads and a model of both time points refuses.
    ``registered[t]`` is the folder with ``{PS,AP,PVP,DP}.nii.gz`` of time point ``t``;
    ``masks[t]`` the checked mask. ``post_to_pre``: the cross-time transform file, required
    by ``post_frame: pre`` (:func:`crop_carried`). Both files are written only after both
    time points were cropped.
    """
    s = settings
    transform = None
    if s.post_frame == "pre" and "post" in timepoints:
        if post_to_pre is None:
            raise RecurError(
                f"patient {patient}: crop.post_frame 'pre' needs the post-to-pre transform"
            )
        transform = read_transform(
            post_to_pre, who=f"patient {patient}", what="post-to-pre transform"
        )
    result: dict[str, TimepointCrop] = {}
    pre_dp: sitk.Image | None = None
    for t in timepoints:
        who = f"patient {patient} ({t})"
        folder = Path(registered[t])
        phases = {ph: _read(folder / f"{ph}.nii.gz", who) for ph in PHASES}
        mask = _read(Path(masks[t]), who)
        dp = phases["DP"]
        if mask.GetSize() != dp.GetSize() or not np.allclose(
            mask.GetOrigin(), dp.GetOrigin(), atol=1e-3
        ):
            raise RecurError(f"{who}: mask {masks[t]} is not on the grid of {folder / 'DP.nii.gz'}")
        try:
            if t == "post" and transform is not None and pre_dp is not None:
                result[t] = crop_carried(phases, mask, pre_dp, result["pre"], transform, s)
            else:
                result[t] = crop_timepoint(phases, mask, s)
        except ValueError as exc:
            raise RecurError(f"{who}: cannot crop ({masks[t]}): {exc}") from None
        if t == "pre":
            pre_dp = dp
    crops = np.stack([result[t].crops for t in timepoints]).astype(np.float32)
    mk = np.stack([result[t].masks for t in timepoints]).astype(np.uint8)
    arrays = {
        "crops": crops,
        "masks": mk,
        "slices": np.array([result[t].slices for t in timepoints], dtype=np.int32),
        "centre": np.array([result[t].centre for t in timepoints], dtype=np.int32),
        "spacing": np.array([result[t].spacing for t in timepoints], dtype=np.float64),
        "roi_area_px": np.array([result[t].roi_area_px for t in timepoints], dtype=np.int64),
        "roi_area_mm2": np.array([result[t].roi_area_mm2 for t in timepoints], dtype=np.float64),
        "timepoints": np.array(list(timepoints)),
        "phases": np.array(PHASES),
        "normalisation": np.array(s.normalisation),
        "post_frame": np.array(s.post_frame),
    }
    with atomic_path(out) as tmp, open(tmp, "wb") as fh:
        np.savez_compressed(fh, **arrays)
    if qc_png is not None:
        qc_montage(crops, mk, patient, qc_png, arrays["spacing"])
    return result
