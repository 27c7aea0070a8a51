"""Toy data for the tests of the networks, training and Grad-CAM: random crop files of the
contracted shapes (:mod:`recur.models.data`) with a planted ER signal, and a toy cohort of
them. Not a cohort of the input contract: no DICOM, no clinical predictors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd


def toy_crops(
    label: int, size: int = 128, rng: np.random.Generator | None = None, signal: float = 1.0
) -> tuple[np.ndarray, np.ndarray]:
    """A toy crop pair of the contracted shapes (not a cohort).

    Noise N(0, 1) plus a disc (the "tumour") on pre and a ring-shaped disc (the "ablation
    zone") on post; with ER (``label=1``) the pre disc is brighter by ``signal`` and the post
    ring is off-centre. Returns ``crops`` (2, 4, 3, S, S) float32 and ``masks`` (2, 3, S, S).
    """
    rng = np.random.default_rng(0) if rng is None else rng
    yy, xx = np.mgrid[:size, :size].astype(np.float32)
    c = size / 2
    r = size / 6
    disc = ((yy - c) ** 2 + (xx - c) ** 2) <= r**2
    shift = r * 0.6 if label else 0.0
    ring = ((yy - c - shift) ** 2 + (xx - c) ** 2) <= (1.4 * r) ** 2
    crops = rng.standard_normal((2, 4, 3, size, size)).astype(np.float32)
    crops[0] += (1.0 + signal * label) * disc
    crops[1] += 1.0 * ring - 1.0 * disc
    masks = np.stack([np.repeat(disc[None], 3, 0), np.repeat(ring[None], 3, 0)]).astype(np.uint8)
    return crops, masks


def write_toy_cohort(
    outdir: str | Path,
    n_train: int = 40,
    n_test: int = 10,
    size: int = 64,
    seed: int = 0,
    signal: float = 1.0,
    er_rate: float = 0.4,
) -> dict[str, Path]:
    """Write a toy cohort: ``crops/{patient}.npz`` (:func:`toy_crops`), ``patients.csv``
    (patient_id, site, cohort) and ``clinical.csv`` (patient_id, er).

    ER is drawn with probability ``er_rate``, with at least 2 of each class per cohort.
    Returns the paths ``{"crops", "patients", "clinical"}``.
    """
    outdir = Path(outdir)
    crops_dir = outdir / "crops"
    crops_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    rows = []
    for cohort, n in (("train", n_train), ("test", n_test)):
        er = (rng.random(n) < er_rate).astype(int)
        er[:2], er[2:4] = 1, 0
        for y in er:
            pid = f"T{len(rows) + 1:04d}"
            crops, masks = toy_crops(int(y), size, rng, signal)
            np.savez(crops_dir / f"{pid}.npz", crops=crops, masks=masks)
            site = "siteA" if cohort == "train" else "siteB"
            rows.append((pid, site, cohort, int(y)))
    df = pd.DataFrame(rows, columns=["patient_id", "site", "cohort", "er"])
    paths = {
        "crops": crops_dir,
        "patients": outdir / "patients.csv",
        "clinical": outdir / "clinical.csv",
    }
    df[["patient_id", "site", "cohort"]].to_csv(paths["patients"], index=False)
    df[["patient_id", "er"]].to_csv(paths["clinical"], index=False)
    return paths


def settings_option(section: str, **overrides) -> list[str]:
    """``["--settings", JSON]``: config ``section`` as a rule passes it to its command (the
    schema's defaults with ``overrides``)."""
    from recur.settings import section_defaults, section_json

    return ["--settings", section_json(section_defaults(section, **overrides))]


#: The small networks the tests train, without the options the schema turns on for the study
#: (ROI channels, the margin target, test-time augmentation, the covariate offset): a test
#: that wants one of them names it.
TOY_TRAIN = {
    "widths": [8, 8, 16, 16],
    "gru_hidden": 8,
    "roi_channel": [],
    "margin_target": [],
    "tta": False,
    "offset": {"models": []},
}


def toy_train_config(**overrides):
    """:class:`~recur.models.train.TrainConfig` of the schema's defaults, :data:`TOY_TRAIN`
    and ``overrides``."""
    from recur.models.train import TrainConfig

    return TrainConfig.defaults(**{**TOY_TRAIN, **overrides})


def toy_train_settings(**overrides) -> str:
    """``train-dl --settings`` of :func:`toy_train_config` (the train section as the rule
    passes it)."""
    from dataclasses import asdict

    from recur.settings import section_json

    return section_json(asdict(toy_train_config(**overrides)))


def network(name: str, **overrides):
    """``recur.models.networks.build_model(name)`` with the schema's network settings
    (``train.widths``, ``blocks``, ``gru_hidden``, ``dropout``, ``max_pool``) and
    ``overrides`` (also ``in_channels``, ``aux_outputs``)."""
    from recur.models.networks import build_model
    from recur.models.train import TrainConfig

    t = TrainConfig.defaults()
    kwargs = {
        "widths": t.widths,
        "blocks": t.blocks,
        "hidden": t.gru_hidden,
        "dropout": t.dropout,
        "max_pool": t.max_pool,
    }
    return build_model(name, **{**kwargs, **overrides})


def mr_slice_dataset():
    """An empty MR Image Storage slice (file meta, SOP class and instance, modality) for a
    test or bench script to fill in and write with pydicom."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = MRImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = MRImageStorage
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality = "MR"
    return ds


def write_mr_series(folder, volume, *, origin, spacing, direction=None, seed=0):
    """Write ``volume`` (z, y, x; uint16) as an MR series of one file per slice with the
    given geometry -- ``origin`` of the first slice, ``spacing`` (column, row, slice step) and
    ``direction`` (3 x 3, columns: row cosine, column cosine, slice normal; identity if None)
    -- and return the datasets written, in slice order. Fake patient and study values only.
    """
    from pathlib import Path

    import numpy as np
    from pydicom.uid import generate_uid

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    d = np.eye(3) if direction is None else np.asarray(direction, dtype=float)
    volume = np.asarray(volume, dtype=np.uint16)
    study, series, frame = (generate_uid(entropy_srcs=[str(seed), k]) for k in "abc")
    out = []
    for k in range(volume.shape[0]):
        ds = mr_slice_dataset()
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid(
            entropy_srcs=[str(seed), "sop", str(k)]
        )
        ds.PatientName, ds.PatientID, ds.PatientBirthDate = "FAKE^PATIENT", "FAKE01", ""
        ds.PatientSex, ds.AccessionNumber, ds.ReferringPhysicianName = "O", "", ""
        ds.StudyInstanceUID, ds.SeriesInstanceUID = study, series
        ds.FrameOfReferenceUID, ds.StudyID, ds.SeriesNumber = frame, "1", 1
        ds.StudyDate, ds.StudyTime, ds.Manufacturer = "20200101", "120000", "FAKE"
        ds.InstanceNumber = k + 1
        pos = np.asarray(origin, dtype=float) + d[:, 2] * spacing[2] * k
        ds.ImagePositionPatient = [f"{v:.6f}" for v in pos]
        ds.ImageOrientationPatient = [f"{v:.8f}" for v in (*d[:, 0], *d[:, 1])]
        ds.PixelSpacing = [f"{spacing[1]:g}", f"{spacing[0]:g}"]
        ds.SliceThickness = f"{spacing[2]:g}"
        ds.Rows, ds.Columns = volume.shape[1], volume.shape[2]
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
        ds.PixelData = np.ascontiguousarray(volume[k]).tobytes()
        ds.save_as(folder / f"slice{k:03d}.dcm", enforce_file_format=True)
        out.append(ds)
    return out
