"""Radiomics features of one patient: regions, rings and pyradiomics on in-memory images.

* :func:`ring_masks`: rings around a binary region from a signed distance map in mm
  (``SignedMaurerDistanceMap`` with the image spacing): ring ``(a, b)`` holds the voxels
  outside the region whose distance to its surface is in ``(a, b]`` mm, clipped to the
  image (no liver mask is part of the input contract, so a ring may reach beyond the liver).
* :func:`crop_box`: the region's bounding box grown by the widest ring (and pyradiomics'
  padding), so extraction never touches the rest of the volume.
* :func:`region_features`: pyradiomics' ``RadiomicsFeatureExtractor.execute`` on one image
  and region. Intensity normalisation (``normalize`` of the parameter file) is applied to the
  whole volume first, with pyradiomics' own function, exactly as the extractor does on a
  whole volume; the extractor then sees the box with normalisation switched off, so the
  features equal those of the extractor called on the whole volume and region.
* :func:`patient_features`: every region of both time points on every phase, as one long
  table (``feature``, ``value``); names ``<timepoint>_<phase>_<region>__<pyradiomics name>``,
  shape features once per region (on DP, or the last phase listed).

Regions with too few voxels for pyradiomics (``minimumROISize``, ``minimumROIDimensions``)
give no rows (the models impute them).
"""

from __future__ import annotations

import copy
import logging
import math
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from recur.errors import RecurError

if TYPE_CHECKING:  # imported where used
    import pandas as pd
    import SimpleITK as sitk

    from recur.radiomics.settings import FeatureSettings

log = logging.getLogger("recur")

#: Columns of a patient's feature table (``results/radiomics/<patient>.csv``).
FEATURE_COLUMNS: tuple[str, ...] = ("feature", "value")
#: The phase that carries the shape features of a region (the regions are drawn on DP).
SHAPE_PHASE = "DP"
#: Region names: the ROI of each time point, then its rings.
ROI_NAMES: dict[str, str] = {"pre": "tumour", "post": "zone"}


def ring_name(ring: Sequence[float]) -> str:
    """``ring0-5`` for the ring (0, 5) mm (``ring2.5-5`` keeps a fraction)."""
    return "ring" + "-".join(f"{v:g}" for v in ring)


def distance_map(mask: sitk.Image) -> sitk.Image:
    """Signed distance (mm) of every voxel to the surface of the binary ``mask``: positive
    outside, negative inside (0 on the region's own boundary voxels)."""
    import SimpleITK as sitk

    return sitk.SignedMaurerDistanceMap(
        sitk.Cast(mask > 0, sitk.sitkUInt8),
        insideIsPositive=False,
        squaredDistance=False,
        useImageSpacing=True,
    )


def ring_masks(
    mask: sitk.Image, rings_mm: Sequence[Sequence[float]], within: sitk.Image | None = None
) -> list[sitk.Image]:
    """One binary mask (UInt8, ``mask``'s grid) per ring of ``rings_mm``: the voxels outside
    ``mask`` at a distance in ``(inner, outer]`` mm of its surface, and inside ``within``
    when given (e.g. a liver mask)."""
    import SimpleITK as sitk

    d = distance_map(mask)
    out = []
    for inner, outer in rings_mm:
        ring = sitk.And(d > float(inner), d <= float(outer))
        if within is not None:
            ring = sitk.And(ring, sitk.Cast(within > 0, sitk.sitkUInt8))
        out.append(sitk.Cast(ring, sitk.sitkUInt8))
    return out


def crop_box(mask: sitk.Image, margin_mm: float) -> tuple[list[int], list[int]]:
    """(index, size) of ``mask``'s bounding box grown by ``margin_mm`` plus one voxel on
    every side, clipped to the image."""
    import SimpleITK as sitk

    stats = sitk.LabelShapeStatisticsImageFilter()
    stats.Execute(sitk.Cast(mask > 0, sitk.sitkUInt8))
    if not stats.HasLabel(1):
        raise RecurError("the region is empty")
    box = stats.GetBoundingBox(1)
    dim = mask.GetDimension()
    lo, hi = list(box[:dim]), [box[i] + box[dim + i] for i in range(dim)]
    index, size = [], []
    for i, sp in enumerate(mask.GetSpacing()):
        pad = math.ceil(margin_mm / sp) + 1
        a = max(0, lo[i] - pad)
        b = min(mask.GetSize()[i], hi[i] + pad)
        index.append(int(a))
        size.append(int(b - a))
    return index, size


def crop(image: sitk.Image, index: Sequence[int], size: Sequence[int]) -> sitk.Image:
    """The box (``index``, ``size``) of ``image`` (same physical positions)."""
    import SimpleITK as sitk

    return sitk.RegionOfInterest(image, list(size), list(index))


# --------------------------------------------------------------------------- pyradiomics
def read_params(path: str | Path) -> dict[str, Any]:
    """A pyradiomics parameter file as a dict (checked by pyradiomics' own schema when an
    extractor is built from it)."""
    import yaml

    try:
        params = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise RecurError(
            f"{Path(path).name}: cannot read the pyradiomics parameters ({exc})"
        ) from None
    if not isinstance(params, dict):
        raise RecurError(f"{Path(path).name}: not a pyradiomics parameter file")
    return params


class Extractor:
    """pyradiomics extractors built from one parameter dict: :attr:`full` (the file's
    feature classes) and :attr:`no_shape` (the same without shape features), both with
    normalisation off (:meth:`normalise` applies it to a whole volume first)."""

    def __init__(self, params: Mapping[str, Any]):
        from radiomics import featureextractor

        logging.getLogger("radiomics").setLevel(logging.ERROR)
        try:
            self.full = featureextractor.RadiomicsFeatureExtractor(copy.deepcopy(dict(params)))
            self.no_shape = featureextractor.RadiomicsFeatureExtractor(copy.deepcopy(dict(params)))
        except Exception as exc:  # pykwalify's schema errors have no common base
            raise RecurError(f"pyradiomics parameters refused: {exc}") from None
        self.settings = dict(self.full.settings)
        for ext in (self.full, self.no_shape):
            ext.settings["normalize"] = False
            ext.settings["additionalInfo"] = False
        for name in ("shape", "shape2D"):
            self.no_shape.enabledFeatures.pop(name, None)
        #: mm of image pyradiomics may read around a region (its padDistance, in voxels)
        self.pad_voxels = int(self.settings.get("padDistance", 5))

    def normalise(self, image: sitk.Image) -> sitk.Image:
        """``image`` as float, normalised over the whole volume as the parameter file asks
        (pyradiomics' ``normalizeImage``: ``normalize``, ``normalizeScale``,
        ``removeOutliers``)."""
        import SimpleITK as sitk

        from radiomics import imageoperations

        image = sitk.Cast(image, sitk.sitkFloat32)
        if self.settings.get("normalize", False):
            image = imageoperations.normalizeImage(image, **self.settings)
        return image

    def features(self, image: sitk.Image, mask: sitk.Image, shape: bool) -> dict[str, float]:
        """pyradiomics' features of ``mask`` (label 1) on ``image`` (already normalised);
        ``{}`` when the region is too small for the parameter file's minimums."""
        ext = self.full if shape else self.no_shape
        try:
            result = ext.execute(image, mask, label=int(self.settings.get("label", 1)))
        except ValueError as exc:  # pyradiomics' checkMask: too few voxels, a flat region
            log.warning("region skipped: %s", str(exc).splitlines()[0])
            return {}
        return {k: float(v) for k, v in result.items() if not str(k).startswith("diagnostics_")}


def region_features(
    extractor: Extractor,
    image: sitk.Image,
    regions: Mapping[str, sitk.Image],
    shape: bool,
    prefix: str,
) -> dict[str, float]:
    """The features of every region of ``regions`` (``{name: mask}``, cropped like
    ``image``) as ``{<prefix>_<name>__<feature>: value}``."""
    out = {}
    for name, region in regions.items():
        for key, value in extractor.features(image, region, shape).items():
            out[f"{prefix}_{name}__{key}"] = value
    return out


def timepoint_regions(
    mask: sitk.Image, rings_mm: Sequence[Sequence[float]], timepoint: str, pad_voxels: int = 0
) -> tuple[tuple[list[int], list[int]], dict[str, sitk.Image]]:
    """The box around ``mask`` and its rings, and ``{region name: mask}`` cropped to it:
    the ROI (``tumour`` or ``zone``) then each ring (:func:`ring_name`)."""
    import SimpleITK as sitk

    widest = max((float(r[1]) for r in rings_mm), default=0.0)
    pad_mm = widest + pad_voxels * max(mask.GetSpacing())
    index, size = crop_box(mask, pad_mm)
    roi = sitk.Cast(crop(mask, index, size) > 0, sitk.sitkUInt8)
    regions = {ROI_NAMES[timepoint]: roi}
    for ring, m in zip(rings_mm, ring_masks(roi, rings_mm), strict=True):
        regions[ring_name(ring)] = m
    return (index, size), regions


def patient_features(
    images: Mapping[str, Mapping[str, sitk.Image]],
    masks: Mapping[str, sitk.Image],
    settings: FeatureSettings,
    params: Mapping[str, Any],
) -> pd.DataFrame:
    """The long feature table of one patient (:data:`FEATURE_COLUMNS`).

    ``images``: ``{timepoint: {phase: image}}`` (each time point's phases on its DP grid,
    as the workflow registers them), ``masks``: ``{timepoint: ROI mask}`` on the same grid
    (the tumour pre-ablation, the ablation zone post-ablation). A time point absent from
    ``masks`` gives no feature (`recur predict`: a patient without a post-ablation series).
    """
    import pandas as pd

    extractor = Extractor(params)
    rings = {"pre": settings.tumour_rings_mm, "post": settings.zone_rings_mm}
    shape_phase = SHAPE_PHASE if SHAPE_PHASE in settings.phases else settings.phases[-1]
    values: dict[str, float] = {}
    for tp in (t for t in ROI_NAMES if t in masks):
        (index, size), regions = timepoint_regions(masks[tp], rings[tp], tp, extractor.pad_voxels)
        for phase in settings.phases:
            image = crop(extractor.normalise(images[tp][phase]), index, size)
            for region in regions.values():
                region.CopyInformation(image)
            values.update(
                region_features(extractor, image, regions, phase == shape_phase, f"{tp}_{phase}")
            )
    return pd.DataFrame({"feature": list(values), "value": np.array(list(values.values()))})


def features_files(
    registered: Mapping[str, str | Path],
    masks: Mapping[str, str | Path],
    params_file: str | Path,
    out: str | Path,
    settings: FeatureSettings,
    patient: str = "?",
) -> tuple[pd.DataFrame, float]:
    """Read one patient's registered phases (``registered``: ``{timepoint: folder of
    <phase>.nii.gz}``, both time points or only ``pre``) and ROI masks (``{timepoint: mask
    file}``, the same time points), write the feature table to ``out``; returns it and the
    extraction's seconds (reading excluded)."""
    import SimpleITK as sitk

    from recur.io import atomic_path

    def read(path: Path, what: str) -> sitk.Image:
        try:
            return sitk.ReadImage(str(path))
        except RuntimeError:
            raise RecurError(f"{patient}: cannot read the {what} ({Path(path).name})") from None

    timepoints = [t for t in ROI_NAMES if t in registered]
    if "pre" not in timepoints or set(masks) != set(timepoints):
        raise RecurError(f"{patient}: radiomics needs the pre time point, one mask each")
    images = {
        tp: {
            ph: read(Path(registered[tp]) / f"{ph}.nii.gz", f"{tp} {ph} image")
            for ph in settings.phases
        }
        for tp in timepoints
    }
    roi = {tp: read(Path(masks[tp]), f"{tp} mask") for tp in timepoints}
    params = read_params(params_file)
    t0 = time.perf_counter()
    try:
        table = patient_features(images, roi, settings, params)
    except RecurError as exc:
        raise RecurError(f"{patient}: {exc}") from None
    seconds = time.perf_counter() - t0
    with atomic_path(out) as tmp:  # 10 significant digits: the features as computed
        table.to_csv(tmp, index=False, float_format="%.10g", lineterminator="\n")
    return table, seconds
