"""Writing a synthetic ROI mask as a DICOM object that references its source MR series.

:func:`write_seg` writes a BINARY DICOM Segmentation (highdicom), :func:`write_rtstruct` an RT
Structure Set (pydicom; one CLOSED_PLANAR contour per closed boundary per slice). Both take
the mask as an array (z, y, x) whose slice ``k`` lies on the ``k``-th image of the source
series in order of position along the slice normal (ascending), the order in which SimpleITK
reads the series. Patient and study attributes are copied from the source images, as a real
export copies them; the writing equipment, creator and labels are clearly fake. UIDs derive
from ``uid_key`` (:func:`~recur.synthetic.dicom_writer.dicom_uid`) and all dates and times
from the source images' content date and time, so the same inputs give the same bytes.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from recur.synthetic.dicom_writer import dicom_uid

#: Values naming the (fake) equipment and person that "made" the ROI objects.
WRITER = {
    "Manufacturer": "RECUR SYNTHETIC (FAKE)",
    "ManufacturerModelName": "recur synthetic ROI writer",
    "SoftwareVersions": "synthetic",
    "DeviceSerialNumber": "FKROI0001",
    "ContentCreatorName": "FAKEREADER^SYNTHETIC",
}
#: Default series numbers of the SEG and RTSTRUCT series.
SEG_SERIES_NUMBER = 901
RTSTRUCT_SERIES_NUMBER = 902
#: Colour of the ROI (RTSTRUCT ROIDisplayColor; the SEG's CIELab equivalent).
_RGB = (255, 64, 0)

# Patient and General Study attributes copied from the source images when present.
_PATIENT_STUDY = (
    "PatientName",
    "PatientID",
    "IssuerOfPatientID",
    "PatientBirthDate",
    "PatientSex",
    "PatientAge",
    "PatientSize",
    "PatientWeight",
    "StudyInstanceUID",
    "StudyDate",
    "StudyTime",
    "ReferringPhysicianName",
    "StudyID",
    "AccessionNumber",
    "StudyDescription",
)


def read_source_series(folder: Path) -> list:
    """The images (full pydicom datasets) of the series in ``folder``, sorted by position
    along the slice normal, ascending (SimpleITK's slice order of the series)."""
    import pydicom

    files = sorted(p for p in Path(folder).iterdir() if p.is_file())
    datasets = [pydicom.dcmread(p) for p in files]
    if not datasets:
        raise ValueError(f"no DICOM files in {folder}")
    normal = _normal(datasets[0])
    datasets.sort(key=lambda ds: float(np.dot(normal, np.array(ds.ImagePositionPatient, float))))
    series = {ds.SeriesInstanceUID for ds in datasets}
    if len(series) != 1:
        raise ValueError(f"{folder} holds {len(series)} series, expected one")
    return datasets


def _normal(ds) -> np.ndarray:
    iop = np.array(ds.ImageOrientationPatient, float)
    return np.cross(iop[:3], iop[3:])


def _check_mask(mask_zyx: np.ndarray, sources: list) -> np.ndarray:
    mask = np.asarray(mask_zyx)
    shape = (len(sources), int(sources[0].Rows), int(sources[0].Columns))
    if mask.shape != shape:
        raise ValueError(f"mask shape {mask.shape} does not match the source series {shape}")
    return mask.astype(bool)


def _content_datetime(ds) -> tuple[str, str]:
    """The (date, time) the ROI objects carry: the source image's content date and time."""
    date = ds.get("ContentDate") or ds.get("SeriesDate") or ds.get("StudyDate")
    time = ds.get("ContentTime") or ds.get("SeriesTime") or ds.get("StudyTime") or "000000"
    if not date:
        raise ValueError("the source images carry no ContentDate, SeriesDate or StudyDate")
    return str(date), str(time)


def write_seg(
    mask_zyx: np.ndarray,
    source_folder: Path,
    out_path: Path,
    *,
    label: str,
    uid_key: tuple,
    series_number: int = SEG_SERIES_NUMBER,
) -> None:
    """Write ``mask_zyx`` as a BINARY DICOM SEG (one segment, ``label``) on the series in
    ``source_folder``; frames of empty slices are omitted."""
    import datetime

    import highdicom as hd
    from pydicom.sr.codedict import codes
    from pydicom.valuerep import DA, DT, TM

    sources = read_source_series(Path(source_folder))
    mask = _check_mask(mask_zyx, sources)
    date, time = _content_datetime(sources[0])
    segment = hd.seg.SegmentDescription(
        segment_number=1,
        segment_label=label,
        segmented_property_category=codes.SCT.MorphologicallyAbnormalStructure,
        segmented_property_type=codes.SCT.Lesion,
        algorithm_type=hd.seg.SegmentAlgorithmTypeValues.MANUAL,
        anatomic_regions=[codes.SCT.Liver],
        display_color=hd.color.CIELabColor.from_rgb(*_RGB),
    )
    seg = hd.seg.Segmentation(
        source_images=sources,
        pixel_array=mask.astype(np.uint8),
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=[segment],
        series_instance_uid=dicom_uid(*uid_key, "seg-series"),
        series_number=series_number,
        sop_instance_uid=dicom_uid(*uid_key, "seg-sop"),
        instance_number=1,
        manufacturer=WRITER["Manufacturer"],
        manufacturer_model_name=WRITER["ManufacturerModelName"],
        software_versions=WRITER["SoftwareVersions"],
        device_serial_number=WRITER["DeviceSerialNumber"],
        content_description=f"FAKE synthetic ROI: {label}"[:64],
        content_creator_name=WRITER["ContentCreatorName"],
        content_label="FAKE_ROI",
        omit_empty_frames=True,
        series_description=f"FAKE SEG {label}"[:64],
        content_date=date,
        content_time=time,
        series_date=date,
        series_time=time,
    )
    # highdicom stamps the creation time and its own contribution with "now" and draws a
    # random dimension organization UID: fix them.
    seg.InstanceCreationDate, seg.InstanceCreationTime = date, time
    when = datetime.datetime.combine(DA(date), TM(time))
    for item in seg.get("ContributingEquipmentSequence", []):
        if "ContributionDateTime" in item:
            item.ContributionDateTime = DT(when)
    dim_uid = dicom_uid(*uid_key, "seg-dimension-organization")
    for item in seg.get("DimensionOrganizationSequence", []):
        item.DimensionOrganizationUID = dim_uid
    for item in seg.get("DimensionIndexSequence", []):
        item.DimensionOrganizationUID = dim_uid
    Path(out_path).parent.mkdir(parents=True, exist_ok=True)
    seg.save_as(out_path, enforce_file_format=True)


def slice_contours(mask_yx: np.ndarray) -> list[np.ndarray]:
    """The closed boundaries of one slice as (n, 2) arrays of (row, col) pixel indices.

    Traced at level 0.5 on the slice padded by one pixel, so every vertex lies halfway
    between a pixel inside and one outside and the pixel centres enclosed by the polygons
    (even-odd rule) are exactly the mask's; holes are separate (inner) contours. The closing
    point is not repeated, and vertices on a straight line between their neighbours are
    dropped (exactly: the coordinates are multiples of one half).
    """
    from skimage.measure import find_contours

    padded = np.pad(mask_yx.astype(np.uint8), 1)
    out = []
    for c in find_contours(padded, 0.5):
        twice = np.rint(c[:-1] * 2).astype(np.int64)  # closed: last == first
        prev, nxt = np.roll(twice, 1, axis=0), np.roll(twice, -1, axis=0)
        a, b = twice - prev, nxt - twice
        keep = a[:, 0] * b[:, 1] - a[:, 1] * b[:, 0] != 0
        out.append(twice[keep] / 2.0 - 1.0)  # undo the padding
    return out


def _to_patient(points_rc: np.ndarray, ds) -> np.ndarray:
    """(row, col) pixel indices of image ``ds`` as patient coordinates (LPS, mm)."""
    iop = np.array(ds.ImageOrientationPatient, float)
    row_spacing, col_spacing = (float(v) for v in ds.PixelSpacing)
    ipp = np.array(ds.ImagePositionPatient, float)
    return (
        ipp
        + points_rc[:, 1:2] * col_spacing * iop[:3]  # along a row: increasing column index
        + points_rc[:, 0:1] * row_spacing * iop[3:]  # down a column: increasing row index
    )


def _ds_values(xyz: np.ndarray) -> list[str]:
    return [f"{v:.4f}" for v in np.round(xyz.ravel(), 4) + 0.0]  # + 0.0: no "-0.0000"


def write_rtstruct(
    mask_zyx: np.ndarray,
    source_folder: Path,
    out_path: Path,
    *,
    label: str,
    uid_key: tuple,
    series_number: int = RTSTRUCT_SERIES_NUMBER,
) -> None:
    """Write ``mask_zyx`` as an RT Structure Set (one ROI, ``label``) on the series in
    ``source_folder``: one CLOSED_PLANAR contour per closed boundary per slice
    (:func:`slice_contours`), each referencing its image."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.sequence import Sequence
    from pydicom.uid import (
        PYDICOM_IMPLEMENTATION_UID,
        ExplicitVRLittleEndian,
        RTStructureSetStorage,
    )

    sources = read_source_series(Path(source_folder))
    mask = _check_mask(mask_zyx, sources)
    date, time = _content_datetime(sources[0])
    first = sources[0]
    sop_uid = dicom_uid(*uid_key, "rtstruct-sop")
    for_uid = first.FrameOfReferenceUID

    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = RTStructureSetStorage
    ds.file_meta.MediaStorageSOPInstanceUID = sop_uid
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    if "SpecificCharacterSet" in first:
        ds.SpecificCharacterSet = first.SpecificCharacterSet
    ds.InstanceCreationDate, ds.InstanceCreationTime = date, time
    ds.SOPClassUID = RTStructureSetStorage
    ds.SOPInstanceUID = sop_uid
    for key in _PATIENT_STUDY:
        if key in first:
            ds[key] = first[key]
    for key in ("PatientName", "PatientID", "PatientBirthDate", "PatientSex"):
        ds.setdefault(key, "")  # type 2
    ds.SeriesDate, ds.SeriesTime = date, time
    ds.Modality = "RTSTRUCT"
    ds.SeriesDescription = f"FAKE RTSTRUCT {label}"[:64]
    ds.SeriesInstanceUID = dicom_uid(*uid_key, "rtstruct-series")
    ds.SeriesNumber = series_number
    ds.OperatorsName = ""
    for key in ("Manufacturer", "ManufacturerModelName", "DeviceSerialNumber"):
        setattr(ds, key, WRITER[key])
    ds.SoftwareVersions = WRITER["SoftwareVersions"]
    ds.InstanceNumber = 1
    ds.FrameOfReferenceUID = for_uid
    ds.PositionReferenceIndicator = first.get("PositionReferenceIndicator", "")
    ds.StructureSetLabel = "FAKE_ROI"
    ds.StructureSetName = f"FAKE synthetic ROI: {label}"[:64]
    ds.StructureSetDate, ds.StructureSetTime = date, time

    def image_ref(src) -> Dataset:
        ref = Dataset()
        ref.ReferencedSOPClassUID = src.SOPClassUID
        ref.ReferencedSOPInstanceUID = src.SOPInstanceUID
        return ref

    series_ref = Dataset()
    series_ref.SeriesInstanceUID = first.SeriesInstanceUID
    series_ref.ContourImageSequence = Sequence([image_ref(s) for s in sources])
    study_ref = Dataset()
    study_ref.ReferencedSOPClassUID = "1.2.840.10008.3.1.2.3.1"  # Detached Study Management
    study_ref.ReferencedSOPInstanceUID = first.StudyInstanceUID
    study_ref.RTReferencedSeriesSequence = Sequence([series_ref])
    for_ref = Dataset()
    for_ref.FrameOfReferenceUID = for_uid
    for_ref.RTReferencedStudySequence = Sequence([study_ref])
    ds.ReferencedFrameOfReferenceSequence = Sequence([for_ref])

    roi = Dataset()
    roi.ROINumber = 1
    roi.ReferencedFrameOfReferenceUID = for_uid
    roi.ROIName = label[:64]
    roi.ROIGenerationAlgorithm = "MANUAL"
    ds.StructureSetROISequence = Sequence([roi])

    contours = []
    for k, src in enumerate(sources):
        if not mask[k].any():
            continue
        for rc in slice_contours(mask[k]):
            c = Dataset()
            c.ContourImageSequence = Sequence([image_ref(src)])
            c.ContourGeometricType = "CLOSED_PLANAR"
            c.NumberOfContourPoints = len(rc)
            c.ContourNumber = len(contours) + 1
            values = _ds_values(_to_patient(rc, src))
            if sum(map(len, values)) + len(values) > 0xFFFE:  # explicit VR DS: 16-bit length
                raise ValueError(f"a contour of {len(rc)} points is too long for ContourData")
            c.ContourData = values
            contours.append(c)
    roi_contour = Dataset()
    roi_contour.ROIDisplayColor = list(_RGB)
    if contours:  # type 3, and an empty sequence is not allowed
        roi_contour.ContourSequence = Sequence(contours)
    roi_contour.ReferencedROINumber = 1
    ds.ROIContourSequence = Sequence([roi_contour])

    obs = Dataset()
    obs.ObservationNumber = 1
    obs.ReferencedROINumber = 1
    obs.ROIObservationLabel = label[:16]
    obs.RTROIInterpretedType = ""
    obs.ROIInterpreter = WRITER["ContentCreatorName"]
    ds.RTROIObservationsSequence = Sequence([obs])

    Path(out_path).parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(out_path, enforce_file_format=True)
