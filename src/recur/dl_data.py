"""MONAI datasets and dictionary transforms over the per-patient crop files.

A sample is a dict ``{"patient_id", "path", "label"}``; :class:`LoadCropsd` turns ``path``
(``results/crops/{patient}.npz``) into ``image``: the time points a model reads, stacked as
channels ``(T*12, H, W)`` with the 12 channels of a time point ordered phase-major
(PS s-1, PS s0, PS s+1, AP ..., DP s+1). The training augmentation then runs on that stack,
so **every channel and both time points get the same rotation, flip and intensity jitter**:
the pre and post crops are each centred on their ROI, and one shared transform keeps their
spatial correspondence (the GRU compares the two at matching positions) while still
presenting a new view of the patient. :class:`SplitTimepointsd` finally reshapes the stack
into ``(12, H, W)`` (Pre) or ``(2, 12, H, W)`` (PrePost).
"""

from __future__ import annotations

import math
import zipfile
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from monai.data import CacheDataset
from monai.transforms import (
    Compose,
    EnsureTyped,
    MapTransform,
    RandFlipd,
    RandRotated,
    RandScaleIntensityd,
    RandShiftIntensityd,
)

from recur.errors import RecurError
from recur.networks import CHANNELS_PER_TIMEPOINT

N_TIMEPOINTS, N_PHASES, N_SLICES = 2, 4, 3


def load_crops(path: str | Path, patient: str = "?") -> tuple[np.ndarray, np.ndarray]:
    """Read and check one crop file: ``crops`` (2, 4, 3, S, S) float32, ``masks`` (2, 3, S, S).

    Raises :class:`RecurError` naming the patient and file when it is unreadable or the
    arrays do not have the contracted shapes or contain non-finite values.
    """
    path = Path(path)
    where = f"patient {patient}: crops/{path.name}"
    try:
        with np.load(path, allow_pickle=False) as z:
            crops = np.asarray(z["crops"], dtype=np.float32)
            masks = np.asarray(z["masks"]) if "masks" in z.files else None
    except (OSError, ValueError, KeyError, zipfile.BadZipFile, EOFError) as exc:
        raise RecurError(f"{where}: cannot read the crop file ({exc})") from None
    if crops.ndim != 5 or crops.shape[:3] != (N_TIMEPOINTS, N_PHASES, N_SLICES):
        raise RecurError(f"{where}: 'crops' has shape {crops.shape}, expected (2, 4, 3, S, S)")
    if crops.shape[3] != crops.shape[4]:
        raise RecurError(f"{where}: crops are not square ({crops.shape[3]}x{crops.shape[4]})")
    if not np.isfinite(crops).all():
        raise RecurError(f"{where}: 'crops' contains NaN or infinite values")
    if masks is None:
        masks = np.zeros((N_TIMEPOINTS, N_SLICES, *crops.shape[3:]), dtype=np.uint8)
    elif masks.shape != (N_TIMEPOINTS, N_SLICES, *crops.shape[3:]):
        raise RecurError(f"{where}: 'masks' has shape {masks.shape}, expected (2, 3, S, S)")
    return crops, masks.astype(np.uint8)


def stack_channels(crops: np.ndarray, timepoints: int) -> np.ndarray:
    """``(2, 4, 3, S, S)`` -> ``(timepoints*12, S, S)``: the first ``timepoints`` time points."""
    if timepoints not in (1, 2):
        raise ValueError("timepoints must be 1 (pre) or 2 (pre, post)")
    return np.ascontiguousarray(crops[:timepoints].reshape(-1, *crops.shape[-2:]))


class LoadCropsd(MapTransform):
    """Load ``d["path"]`` into ``d["image"]`` = :func:`stack_channels` of its crops."""

    def __init__(self, timepoints: int, path_key: str = "path", image_key: str = "image"):
        super().__init__(keys=[path_key])
        self.timepoints = timepoints
        self.path_key = path_key
        self.image_key = image_key

    def __call__(self, data: Mapping[Hashable, object]) -> dict:
        d = dict(data)
        crops, _ = load_crops(str(d[self.path_key]), str(d.get("patient_id", "?")))
        d[self.image_key] = stack_channels(crops, self.timepoints)
        return d


class SplitTimepointsd(MapTransform):
    """``(T*12, H, W)`` -> ``(12, H, W)`` for one time point, ``(T, 12, H, W)`` for two."""

    def __init__(self, keys: str | Sequence[str], timepoints: int):
        super().__init__(keys)
        self.timepoints = timepoints

    def __call__(self, data: Mapping[Hashable, object]) -> dict:
        d = dict(data)
        for key in self.key_iterator(d):
            img = d[key]
            if self.timepoints > 1:
                img = img.reshape(self.timepoints, CHANNELS_PER_TIMEPOINT, *img.shape[-2:])
            d[key] = img
        return d


@dataclass(frozen=True)
class Augmentation:
    """Training-time augmentation settings (all applied with probability ``prob`` each)."""

    rotate_deg: float = 180.0
    flip: bool = True
    intensity_scale: float = 0.1
    intensity_shift: float = 0.1
    prob: float = 0.8
    flip_vertical: bool = True

    def transforms(self, key: str = "image") -> list:
        """The MONAI random dictionary transforms, in order (rotate, flip, vertical flip, scale,
        shift)."""
        out: list = []
        if self.rotate_deg > 0:
            out.append(
                RandRotated(
                    keys=key,
                    range_x=math.radians(self.rotate_deg),
                    prob=self.prob,
                    keep_size=True,
                    mode="bilinear",
                    padding_mode="border",
                )
            )
        if self.flip:
            # axis 1 of (C, H, W) spatial dims (H, W) is W: a left-right (horizontal) flip
            out.append(RandFlipd(keys=key, prob=self.prob, spatial_axis=1))
        if self.flip_vertical:
            # axis 0 of (H, W): an anterior-posterior flip (the crops' content -- tumour,
            # capsule, rim, satellites, ablation zone -- has no preferred orientation)
            out.append(RandFlipd(keys=key, prob=self.prob, spatial_axis=0))
        if self.intensity_scale > 0:
            out.append(RandScaleIntensityd(keys=key, factors=self.intensity_scale, prob=self.prob))
        if self.intensity_shift > 0:
            out.append(RandShiftIntensityd(keys=key, offsets=self.intensity_shift, prob=self.prob))
        return out


def make_transform(timepoints: int, augment: Augmentation | None, seed: int = 0) -> Compose:
    """Load -> (augmentation) -> split time points -> float32 tensors, as one MONAI Compose.

    ``augment=None`` gives the deterministic evaluation pipeline. The random transforms get
    their own random state from ``seed`` (MONAI's DataLoader re-seeds them per epoch from its
    seeded generator as well).
    """
    steps: list = [LoadCropsd(timepoints)]
    if augment is not None:
        steps += augment.transforms("image")
    steps += [
        SplitTimepointsd("image", timepoints),
        EnsureTyped(keys=["image", "label"], dtype="float32", track_meta=False),
    ]
    tf = Compose(steps)
    if augment is not None:
        tf.set_random_state(seed=seed)
    return tf


def make_items(
    patient_ids: Sequence[str], crops_dir: str | Path, labels: Mapping[str, float] | None = None
) -> list[dict]:
    """Sample dicts ``{"patient_id", "path", "label"}`` (label NaN where unknown).

    A missing crop file is an error naming the patient.
    """
    crops_dir = Path(crops_dir)
    items = []
    for pid in patient_ids:
        path = crops_dir / f"{pid}.npz"
        if not path.is_file():
            raise RecurError(f"patient {pid}: crop file crops/{path.name} not found")
        label = float("nan") if labels is None else float(labels.get(pid, float("nan")))
        items.append({"patient_id": str(pid), "path": str(path), "label": np.float32(label)})
    return items


def make_dataset(
    items: Sequence[dict], timepoints: int, augment: Augmentation | None = None, seed: int = 0
) -> CacheDataset:
    """A MONAI ``CacheDataset`` that caches the loaded crops and augments on the fly."""
    return CacheDataset(
        data=list(items),
        transform=make_transform(timepoints, augment, seed),
        cache_rate=1.0,
        num_workers=0,
        progress=False,
    )


def toy_crops(
    label: int, size: int = 128, rng: np.random.Generator | None = None, signal: float = 1.0
) -> tuple[np.ndarray, np.ndarray]:
    """A toy crop pair of the contracted shapes, for tests and benchmarks (not a cohort).

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
    """Write a toy cohort for tests and benchmarks: ``crops/{patient}.npz`` (:func:`toy_crops`),
    ``patients.csv`` (patient_id, site, cohort) and ``clinical.csv`` (patient_id, er).

    ER is drawn with probability ``er_rate``, with at least 2 of each class per cohort.
    Returns the paths ``{"crops", "patients", "clinical"}``.
    """
    import pandas as pd

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
