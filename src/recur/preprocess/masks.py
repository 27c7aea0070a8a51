"""Checks of the ROI masks against their delayed-phase (DP) image, and de-identified copies.

A mask must lie on the DP grid of its time point (same size, spacing, origin and direction
within a small tolerance) and hold integer labels >= 0, with label > 0 marking the ROI and at
least one ROI voxel. Anything else is refused with a :class:`~recur.errors.RecurError` naming
the patient and both files: a mask is never flipped, resampled or repaired silently.

The accepted mask is written as uint8 0/1 with the geometry copied from the DP image, so the
NIfTI header carries geometry only (no description, no intent names from the drawing tool).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from recur.errors import RecurError
from recur.io import atomic_path, read_image
from recur.preprocess import dicom_rois
from recur.preprocess.dicom_rois import RoiSettings


@dataclass(frozen=True)
class GeometryTolerance:
    """How far a mask's geometry may differ from its DP image's and still be accepted.

    ``spacing_rel``: relative difference of each spacing; ``origin_voxels``: origin distance
    per axis as a fraction of that axis' spacing; ``direction``: largest absolute difference
    of the direction-cosine matrices. The defaults absorb float32 rounding in NIfTI headers
    and nothing a reader could see.
    """

    spacing_rel: float = 1e-4
    origin_voxels: float = 0.01
    direction: float = 1e-4


def geometry_problems(
    mask: sitk.Image, image: sitk.Image, tol: GeometryTolerance | None = None
) -> list[str]:
    """The ways ``mask``'s grid differs from ``image``'s (empty list: same grid)."""
    tol = tol or GeometryTolerance()
    out: list[str] = []
    if mask.GetDimension() != image.GetDimension():
        return [f"dimension {mask.GetDimension()} vs {image.GetDimension()}"]
    if mask.GetSize() != image.GetSize():
        out.append(f"size {mask.GetSize()} vs {image.GetSize()}")
    m_sp, i_sp = np.array(mask.GetSpacing()), np.array(image.GetSpacing())
    if not np.allclose(m_sp, i_sp, rtol=tol.spacing_rel, atol=0.0):
        out.append(f"spacing {_fmt(m_sp)} vs {_fmt(i_sp)} mm")
    m_or, i_or = np.array(mask.GetOrigin()), np.array(image.GetOrigin())
    if np.any(np.abs(m_or - i_or) > tol.origin_voxels * i_sp):
        out.append(f"origin {_fmt(m_or)} vs {_fmt(i_or)} mm")
    m_dir, i_dir = np.array(mask.GetDirection()), np.array(image.GetDirection())
    if np.max(np.abs(m_dir - i_dir)) > tol.direction:
        out.append(f"direction {_fmt(m_dir)} vs {_fmt(i_dir)}")
    return out


def _fmt(v: np.ndarray) -> str:
    return "(" + ", ".join(f"{x:.4g}" for x in np.asarray(v, dtype=float)) + ")"


def label_problems(values: np.ndarray) -> list[str]:
    """Why an array of mask values is not a valid label map (empty list: valid).

    Valid: finite, integer-valued, non-negative, with at least one value > 0.
    """
    arr = np.asarray(values)
    if arr.dtype == bool:
        return [] if arr.any() else ["the mask is empty (no voxel > 0)"]
    if not (np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)):
        return [f"unsupported voxel type {arr.dtype}"]
    problems: list[str] = []
    if np.issubdtype(arr.dtype, np.floating):
        n_nan = int(np.count_nonzero(~np.isfinite(arr)))
        if n_nan:
            problems.append(f"{n_nan} voxel(s) are NaN or infinite")
            arr = np.where(np.isfinite(arr), arr, 0)
        frac = arr != np.round(arr)
        if frac.any():
            problems.append(
                f"{int(np.count_nonzero(frac))} voxel(s) have non-integer labels "
                f"(e.g. {float(arr[frac].flat[0]):g})"
            )
    neg = arr < 0
    if neg.any():
        problems.append(
            f"{int(np.count_nonzero(neg))} voxel(s) have negative labels "
            f"(e.g. {float(arr[neg].flat[0]):g})"
        )
    if not problems and not (arr > 0).any():
        problems.append("the mask is empty (no voxel > 0)")
    return problems


class MaskCheck:
    """Check a mask against its DP image and return the binary uint8 mask on the DP grid.

    ``who`` names the patient and ``mask_name``/``image_name`` the two files in the message
    of the :class:`RecurError` raised on refusal.
    """

    def __init__(self, tolerance: GeometryTolerance | None = None):
        self.tolerance = tolerance or GeometryTolerance()

    def __call__(
        self,
        mask: sitk.Image,
        image: sitk.Image,
        *,
        who: str = "patient ?",
        mask_name: str = "mask",
        image_name: str = "DP image",
    ) -> sitk.Image:
        if mask.GetNumberOfComponentsPerPixel() != 1:
            self._refuse(who, mask_name, image_name, ["the mask has more than one component"])
        geo = geometry_problems(mask, image, self.tolerance)
        if geo:
            self._refuse(
                who,
                mask_name,
                image_name,
                ["it is not on the grid of the DP image: " + "; ".join(geo)],
            )
        arr = sitk.GetArrayFromImage(mask)
        labels = label_problems(arr)
        if labels:
            self._refuse(who, mask_name, image_name, labels)
        out = sitk.GetImageFromArray((arr > 0).astype(np.uint8))
        out.CopyInformation(image)
        return out

    @staticmethod
    def _refuse(who: str, mask_name: str, image_name: str, problems: list[str]) -> None:
        raise RecurError(
            f"{who}: ROI mask {mask_name} refused against DP image {image_name}: "
            + "; ".join(problems)
        )


def _read(path: Path, who: str, name: str, other: str) -> sitk.Image:
    return read_image(
        path,
        who=who,
        what="file",
        shown=name,
        context=f" (checking ROI mask against {other})",
        volume=False,
    )


def nonfinite_voxels(path: str | Path) -> int:
    """Number of NaN/infinite voxels stored in a floating-point NIfTI file (0 for others).

    ITK's NIfTI reader turns NaN into 0 on reading, so a NaN-filled mask would look empty or,
    worse, valid; the stored values are therefore checked with nibabel, without scaling.
    """
    name = str(path).lower()
    if not name.endswith((".nii", ".nii.gz")):
        return 0
    import nibabel as nib

    try:
        img = nib.load(str(path))
    except Exception:  # unreadable here: SimpleITK's reader reports it
        return 0
    if img.get_data_dtype().kind != "f":
        return 0
    raw = np.asanyarray(img.dataobj.get_unscaled())
    return int(np.count_nonzero(~np.isfinite(raw)))


@dataclass(frozen=True)
class DicomRoiSource:
    """What a SEG or RTSTRUCT mask needs beyond the DP image: the DP series' DICOM folder
    (and series UID, when series.csv gives one) to check its references against, the
    segment / ROI name (rois.csv's ``roi`` column) and the placement settings."""

    dp_folder: Path
    series_uid: str | None
    roi: str | None
    settings: RoiSettings


def check_mask_file(
    mask_path: str | Path,
    dp_path: str | Path,
    out_path: str | Path,
    *,
    patient: str,
    timepoint: str,
    mask_name: str | None = None,
    dp_name: str | None = None,
    tolerance: GeometryTolerance | None = None,
    dicom: DicomRoiSource | None = None,
) -> dict[str, float | int | str]:
    """Check ``mask_path`` against ``dp_path``; write the binary copy to ``out_path``.

    ``mask_path`` is a label map on the DP grid (NIfTI) or a DICOM SEG / RTSTRUCT, which is
    first placed on the DP grid (:func:`recur.preprocess.dicom_rois.dicom_mask`, with
    ``dicom``). ``mask_name`` / ``dp_name`` are how the files are named in messages (the mask
    relative to the cohort directory). Nothing is written on refusal. Returns a small summary
    (format, ROI voxel count and volume in mm³) for the log.
    """
    who = f"patient {patient} ({timepoint})"
    mask_name = mask_name or str(mask_path)
    dp_name = dp_name or str(dp_path)
    if not Path(mask_path).is_file():
        _read(Path(mask_path), who, mask_name, dp_name)  # raises: file not found
    dp = _read(Path(dp_path), who, dp_name, mask_name)
    kind, binary = checked_mask(
        mask_path,
        dp,
        who=who,
        mask_name=mask_name,
        dp_name=dp_name,
        tolerance=tolerance,
        dicom=dicom,
    )
    n = int(np.count_nonzero(sitk.GetArrayViewFromImage(binary)))
    with atomic_path(out_path) as tmp:
        sitk.WriteImage(binary, str(tmp), useCompression=True)
    return {
        "patient": patient,
        "timepoint": timepoint,
        "format": kind,
        "roi_voxels": n,
        "roi_mm3": float(n * np.prod(binary.GetSpacing())),
    }


def checked_mask(
    mask_path: str | Path,
    dp: sitk.Image,
    *,
    who: str,
    mask_name: str,
    dp_name: str,
    tolerance: GeometryTolerance | None = None,
    dicom: DicomRoiSource | None = None,
) -> tuple[str, sitk.Image]:
    """``(format, binary uint8 mask on the grid of dp)`` of the mask file ``mask_path``
    (NIfTI label map, DICOM SEG or RTSTRUCT); refusals name ``who`` and both files."""
    if not Path(mask_path).is_file():
        _read(Path(mask_path), who, mask_name, dp_name)  # raises: file not found
    try:
        kind = dicom_rois.mask_format(mask_path)
    except dicom_rois.RoiProblem as exc:
        MaskCheck._refuse(who, mask_name, dp_name, [str(exc)])
    if kind == "nifti":
        mask = _read(Path(mask_path), who, mask_name, dp_name)
        # only a floating-point mask can hold NaN (ITK reads a float-stored NIfTI as float;
        # the nibabel check costs ~0.5 s of imports, so integer masks -- ITK-SNAP's -- skip it)
        is_float = mask.GetPixelID() in (sitk.sitkFloat32, sitk.sitkFloat64)
        n_bad = nonfinite_voxels(mask_path) if is_float else 0
        if n_bad:
            MaskCheck._refuse(who, mask_name, dp_name, [f"{n_bad} voxel(s) are NaN or infinite"])
    else:
        mask = _dicom_mask(Path(mask_path), kind, dp, dicom, who, mask_name, dp_name)
    binary = MaskCheck(tolerance)(mask, dp, who=who, mask_name=mask_name, image_name=dp_name)
    return kind, binary


def _dicom_mask(
    path: Path,
    kind: str,
    dp: sitk.Image,
    dicom: DicomRoiSource | None,
    who: str,
    mask_name: str,
    dp_name: str,
) -> sitk.Image:
    """A SEG / RTSTRUCT placed on the grid of ``dp``; every problem is one refusal."""
    label = {"seg": "DICOM SEG", "rtstruct": "RTSTRUCT"}[kind]
    if dicom is None:
        MaskCheck._refuse(
            who, mask_name, dp_name, [f"a {label} mask needs the DP series' DICOM folder"]
        )
    try:
        series_uid, frame, sops = dicom_rois.reference_identifiers(
            dicom.dp_folder, dicom.series_uid
        )
        reference = dicom_rois.ReferenceSeries(dp, series_uid, frame, sops)
        return dicom_rois.dicom_mask(path, reference, dicom.roi, dicom.settings)
    except dicom_rois.RoiProblem as exc:
        MaskCheck._refuse(who, f"{mask_name} ({label})", dp_name, [str(exc)])
        raise  # unreachable: _refuse raises


class CohortMasks:
    """The cohort's ROI masks checked against their converted DP image: ``check-mask`` and
    the mask checks of ``register-patient --check-roi`` (one call per time point).

    ``rois_table`` (and ``series_table``, when given and present) are file names inside
    ``cohort_dir``. Messages name the mask by its path in the cohort folder and DP by its
    NIfTI file and, with a series table, its DICOM folder.
    """

    def __init__(
        self,
        cohort_dir: str | Path,
        rois_table: str,
        series_table: str | None = None,
        roi_settings: RoiSettings | None = None,
    ) -> None:
        from recur.cohort import contract

        self.cohort_dir = Path(cohort_dir)
        self.series_root = self.cohort_dir
        self.rois_table = rois_table
        self.series = None
        if series_table and (self.cohort_dir / series_table).is_file():
            self.series = contract.read_table(self.cohort_dir / series_table)
        self.roi_settings = roi_settings or RoiSettings.defaults()
        self._rois = None
        self._dp_by_series = False

    @classmethod
    def from_tables(
        cls,
        rois,
        rois_root: str | Path,
        series=None,
        series_root: str | Path | None = None,
        roi_settings: RoiSettings | None = None,
    ) -> CohortMasks:
        """From tables already read (``recur predict``): ``rois`` (paths relative to
        ``rois_root``) and ``series`` (folders relative to ``series_root``), for a SEG or
        RTSTRUCT mask's DP series and for DP's DICOM folder in messages."""
        masks = cls.__new__(cls)
        masks.cohort_dir, masks.rois_table = Path(rois_root), None
        masks.series_root = Path(series_root) if series_root is not None else masks.cohort_dir
        masks.series, masks._rois = series, rois
        masks.roi_settings = roi_settings or RoiSettings.defaults()
        masks._dp_by_series = True  # DP is a working file: name it by its DICOM folder only
        return masks

    def check(
        self, patient: str, timepoint: str, dp: str | Path, out: str | Path
    ) -> dict[str, float | int | str]:
        """Check the mask of ``patient`` at ``timepoint`` against ``dp`` and write the binary
        copy to ``out`` (:func:`check_mask_file`); returns its summary."""
        from recur.cohort import contract

        if self._rois is None:
            self._rois = contract.read_table(self.cohort_dir / self.rois_table)
        mask_path = contract.roi_path(self._rois, self.cohort_dir, patient, timepoint)
        try:
            mask_name = str(mask_path.relative_to(self.cohort_dir))
        except ValueError:
            mask_name = str(mask_path)
        dp_name = str(dp)
        dicom = None
        if self.series is not None:
            try:
                row = contract.series_row(self.series, patient, timepoint, "DP")
            except RecurError:
                row = None
            if row is not None:
                dp_name = (
                    f"DP series {row['dicom_dir']}"
                    if self._dp_by_series
                    else f"{dp_name} (from {row['dicom_dir']})"
                )
                uid = row.get("series_uid")
                dicom = DicomRoiSource(
                    dp_folder=self.series_root / row["dicom_dir"],
                    series_uid=(uid.strip() or None) if isinstance(uid, str) else None,
                    roi=contract.roi_name(self._rois, patient, timepoint),
                    settings=self.roi_settings,
                )
        return check_mask_file(
            mask_path,
            dp,
            out,
            patient=patient,
            timepoint=timepoint,
            mask_name=mask_name,
            dp_name=dp_name,
            dicom=dicom,
        )
