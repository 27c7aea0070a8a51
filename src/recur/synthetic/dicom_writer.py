"""Writing the synthetic MR series as DICOM files, with clearly fake identifying values.

:func:`fake_identity` gives the deterministic fake name, identifiers, dates and device values
of one patient; :func:`write_series` writes one MR series, one file per slice under shuffled
names, uncompressed (:class:`_SliceEncoder`, byte-identical to pydicom's writer, faster) or
RLE Lossless (:data:`RLE_PLUGIN`); :func:`dicom_uid` and :func:`dicom_time` make the UIDs
and times written.
"""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np

from recur.synthetic.anatomy import Grid
from recur.synthetic.latent import random_stream
from recur.synthetic.sites import SiteProfile

#: RLE encoder used for the compressed series. Named explicitly: with several plugins installed,
#: pydicom's choice could differ between processes and so break byte-identical output.
RLE_PLUGIN = "pylibjpeg"

_LAST = ("FAKEMAN", "TESTWOOD", "DUMMSON", "NOTREAL", "PLACEBO", "MOCKLEY", "SYNTHSON", "FICTO")
_FIRST = ("ALPHA", "BRAVO", "CHARLIE", "DELTA", "ECHO", "FOXTROT", "GOLF", "HOTEL", "INDIA")
_PRIVATE_CREATOR = "RECUR SYNTH FAKE"


def fake_identity(seed: int, number: int, site: SiteProfile, age: float) -> dict[str, str]:
    """Deterministic, clearly fake identifying values of one patient (for de-id tests)."""
    rng = random_stream(seed, number, 7)
    start = np.datetime64("2014-04-01") + int(rng.integers(0, 1150))
    post = start + int(rng.integers(27, 36))
    birth = start - round(age * 365.25) - int(rng.integers(0, 365))
    d = lambda v: str(v).replace("-", "")  # noqa: E731
    return {
        "PatientName": f"{rng.choice(_LAST)}^{rng.choice(_FIRST)}",
        "PatientID": f"FKMRN{int(rng.integers(10**7, 10**8))}",
        "PatientBirthDate": d(birth),
        "pre_date": d(start),
        "post_date": d(post),
        "pre_acc": f"FKACC{int(rng.integers(10**8, 10**9))}",
        "post_acc": f"FKACC{int(rng.integers(10**8, 10**9))}",
        "ReferringPhysicianName": f"FAKEDOC^{rng.choice(_FIRST)}",
        "OperatorsName": f"FAKETECH^{rng.choice(_FIRST)}",
        "StationName": f"FKSTN{site.name[-1]}{int(rng.integers(1, 4)):02d}",
        "DeviceSerialNumber": f"FKSN{int(rng.integers(10**5, 10**6))}",
        "private": f"FAKEPRIV-{int(rng.integers(16**7, 16**8)):08X}",
        "pre_time": int(rng.integers(8 * 3600, 17 * 3600)),
        "post_time": int(rng.integers(8 * 3600, 17 * 3600)),
    }


def dicom_time(seconds: float) -> str:
    """Seconds after midnight as a DICOM time (``HHMMSS.FFFFFF``)."""
    s = int(seconds)
    frac = round((seconds - s) * 1e6)
    return f"{s // 3600:02d}{(s // 60) % 60:02d}{s % 60:02d}.{frac:06d}"


def dicom_uid(*parts: object) -> str:
    """A deterministic DICOM UID derived from ``parts``."""
    from pydicom.uid import generate_uid

    return generate_uid(entropy_srcs=[str(p) for p in parts])


class _SliceEncoder:
    """Fast writer of the slices of one uncompressed series.

    The series-level elements are encoded once (Explicit VR Little Endian is a plain
    concatenation of elements in tag order); per slice only the file meta, SOPInstanceUID,
    InstanceNumber, ImagePositionPatient, SliceLocation and PixelData are encoded. The result
    is byte-identical to ``Dataset.save_as(..., enforce_file_format=True)``.
    """

    VARYING = (0x00080018, 0x00200013, 0x00200032, 0x00201041, 0x7FE00010)

    def __init__(self, ds) -> None:
        from pydicom.dataset import Dataset

        self.meta = ds.file_meta
        bounds = (0, *self.VARYING, 0xFFFFFFFF)
        self.segments = []
        for lo, hi in itertools.pairwise(bounds):
            part = Dataset()
            for elem in ds:
                if lo < int(elem.tag) < hi:
                    part.add(elem)
            self.segments.append(self._bytes(part))

    @staticmethod
    def _bytes(ds) -> bytes:
        from pydicom.filebase import DicomBytesIO
        from pydicom.filewriter import write_dataset

        fp = DicomBytesIO()
        fp.is_little_endian, fp.is_implicit_VR = True, False
        write_dataset(fp, ds)
        return fp.getvalue()

    def encode(self, sop: str, inst: int, ipp: list[str], loc: str, arr: np.ndarray) -> bytes:
        from pydicom.dataset import Dataset
        from pydicom.filebase import DicomBytesIO
        from pydicom.filewriter import write_file_meta_info

        self.meta.MediaStorageSOPInstanceUID = sop
        fp = DicomBytesIO()
        fp.is_little_endian, fp.is_implicit_VR = True, False
        fp.write(b"\x00" * 128 + b"DICM")
        write_file_meta_info(fp, self.meta, enforce_standard=True)
        parts = [fp.getvalue(), self.segments[0]]
        values = (
            ("SOPInstanceUID", sop),
            ("InstanceNumber", inst),
            ("ImagePositionPatient", ipp),
            ("SliceLocation", loc),
        )
        for (name, value), seg in zip(values, self.segments[1:5], strict=True):
            one = Dataset()
            setattr(one, name, value)
            parts += [self._bytes(one), seg]
        data = arr.astype("<u2", copy=False).tobytes()
        parts.append(b"\xe0\x7f\x10\x00OW\x00\x00" + len(data).to_bytes(4, "little") + data)
        parts.append(self.segments[5])
        return b"".join(parts)


def write_series(
    folder: Path,
    volume: np.ndarray,
    grid: Grid,
    *,
    header: dict,
    site: SiteProfile,
    name_rng: np.random.Generator,
    uid_key: tuple,
    compress: bool,
) -> str:
    """Write one MR series (one file per slice, shuffled names); returns its SeriesInstanceUID.

    ``volume`` holds stored pixel values (uint16, z y x) of ``grid``; ``header`` the
    series-level attributes. Slices are numbered head to feet (InstanceNumber 1 = top).
    """
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import (
        PYDICOM_IMPLEMENTATION_UID,
        ExplicitVRLittleEndian,
        MRImageStorage,
        RLELossless,
    )

    folder.mkdir(parents=True, exist_ok=True)
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = MRImageStorage
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.ImageType = ["ORIGINAL", "PRIMARY", "M", "ND"]
    ds.SOPClassUID = MRImageStorage
    header = dict(header)
    private = header.pop("_private", "FAKEPRIV")
    for key, value in header.items():
        setattr(ds, key, value)
    ds.Modality = "MR"
    ds.Manufacturer = site.manufacturer
    ds.ManufacturerModelName = site.model
    ds.MagneticFieldStrength = f"{site.field_strength:g}"
    ds.ScanningSequence = "GR"
    ds.SequenceVariant = ["SP", "SS"]
    ds.ScanOptions = "FS"
    ds.MRAcquisitionType = "3D"
    ds.SequenceName = site.sequence
    ds.RepetitionTime = f"{site.repetition_time:g}"
    ds.EchoTime = f"{site.echo_time:g}"
    ds.FlipAngle = f"{site.flip_angle:g}"
    ds.SliceThickness = f"{site.thickness:g}"
    ds.SpacingBetweenSlices = f"{grid.spacing[2]:g}"
    ds.BodyPartExamined = "ABDOMEN"
    ds.PatientPosition = "HFS"
    ds.ImageOrientationPatient = ["1", "0", "0", "0", "1", "0"]
    ds.PixelSpacing = [f"{grid.spacing[1]:.8g}", f"{grid.spacing[0]:.8g}"]
    ds.Rows, ds.Columns = int(grid.size[1]), int(grid.size[0])
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    slope, intercept = site.rescale
    ds.RescaleSlope = f"{slope:g}"
    ds.RescaleIntercept = f"{intercept:g}"
    ds.RescaleType = "US"
    hi = float(np.percentile(volume[:, ::4, ::4], 99.5)) * slope + intercept
    ds.WindowCenter = f"{hi / 2:.0f}"
    ds.WindowWidth = f"{hi:.0f}"
    ds.ImagesInAcquisition = int(grid.size[2])
    block = ds.private_block(0x0029, _PRIVATE_CREATOR, create=True)
    block.add_new(0x10, "LO", private)
    series_uid = dicom_uid(*uid_key, "series")
    ds.SeriesInstanceUID = series_uid
    nz = grid.size[2]
    fast = None if compress else _SliceEncoder(ds)
    for k in range(nz):
        inst = nz - k  # head (largest z) first
        z = grid.origin[2] + grid.spacing[2] * k
        ipp = [f"{grid.origin[0]:.4f}", f"{grid.origin[1]:.4f}", f"{z:.4f}"]
        sop = dicom_uid(*uid_key, "sop", k)
        arr = np.ascontiguousarray(volume[k])
        token = f"{int(name_rng.integers(0, 16**12)):012X}"
        fname = {"hex.dcm": f"{token}.dcm", "IM_hex": f"IM_{token}"}.get(site.name_style, token)
        if fast is not None:
            (folder / fname).write_bytes(fast.encode(sop, inst, ipp, f"{z:.4f}", arr))
            continue
        ds.InstanceNumber = inst
        ds.ImagePositionPatient = ipp
        ds.SliceLocation = f"{z:.4f}"
        ds.SOPInstanceUID = sop
        ds.file_meta.MediaStorageSOPInstanceUID = sop
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.PixelData = arr.tobytes()
        ds.compress(RLELossless, arr, encoding_plugin=RLE_PLUGIN, generate_instance_uid=False)
        ds.save_as(folder / fname, enforce_file_format=True)
    return series_uid
