"""MONAI datasets and dictionary transforms over the per-patient crop files.

A sample is a dict ``{"patient_id", "path", "label"}``; :class:`LoadCropsd` turns ``path``
(``results/crops/{patient}.npz``) into ``image``: the time points a model reads, stacked as
channels ``(T*12, H, W)`` with the 12 channels of a time point ordered phase-major
(PS s-1, PS s0, PS s+1, AP ..., DP s+1). The training augmentation then runs on that stack,
so **every channel and both time points get the same rotation, flip and intensity jitter**:
with ``crop.post_frame: pre`` the post crop lies on the pre crop's pixel grid, and one shared
transform keeps that correspondence while still presenting a new view of the patient.
:class:`SplitTimepointsd` finally reshapes the stack into ``(12, H, W)`` (Pre) or
``(2, 12, H, W)`` (PrePost).

ROI channels (``roi=True``, ``train.roi_channel``): each time point gets 3 more channels, the
**tumour** ROI on its three slices (:func:`roi_channels`), appended after its 12 image
channels (15 per time point). With post crops on the pre grid (``crop.post_frame: pre``) the
post time point carries the same tumour outline over the ablation zone, so a convolution can
see where the tumour edge lies relative to the zone edge (the ablative margin) instead of
having to compare two separately encoded crops; with own-frame crops the post ROI (the zone)
is the only outline on that grid. The ROI goes through the same rotation and flips as the
image but not through the intensity jitter.
"""

from __future__ import annotations

import math
import zipfile
from collections.abc import Hashable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from monai.data import CacheDataset, get_track_meta, set_track_meta
from monai.transforms import (
    Compose,
    EnsureTyped,
    MapTransform,
    RandFlipd,
    RandRotated,
    RandScaleIntensityd,
    RandShiftIntensityd,
)

from recur.constants import PHASES, TIMEPOINTS
from recur.errors import RecurError
from recur.models.networks import CHANNELS_PER_TIMEPOINT
from recur.settings import SectionSettings

N_TIMEPOINTS, N_PHASES, N_SLICES = len(TIMEPOINTS), len(PHASES), 3


def load_crops(path: str | Path, patient: str = "?") -> tuple[np.ndarray, np.ndarray]:
    """Read and check one crop file: ``crops`` (2, 4, 3, S, S) float32, ``masks`` (2, 3, S, S)
    (one time point instead of 2 for a patient without a post-ablation series).

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
    # one time point: a patient without a post-ablation series (recur predict's Pre model)
    if (
        crops.ndim != 5
        or crops.shape[1:3] != (N_PHASES, N_SLICES)
        or crops.shape[0]
        not in (
            1,
            N_TIMEPOINTS,
        )
    ):
        raise RecurError(f"{where}: 'crops' has shape {crops.shape}, expected (2, 4, 3, S, S)")
    if crops.shape[3] != crops.shape[4]:
        raise RecurError(f"{where}: crops are not square ({crops.shape[3]}x{crops.shape[4]})")
    if not np.isfinite(crops).all():
        raise RecurError(f"{where}: 'crops' contains NaN or infinite values")
    if masks is None:
        masks = np.zeros((crops.shape[0], N_SLICES, *crops.shape[3:]), dtype=np.uint8)
    elif masks.shape != (crops.shape[0], N_SLICES, *crops.shape[3:]):
        raise RecurError(f"{where}: 'masks' has shape {masks.shape}, expected (2, 3, S, S)")
    return crops, masks.astype(np.uint8)


def crop_frame(path: str | Path) -> str:
    """``post_frame`` of a crop file ("pre" or "own"; files from before it existed: "own")."""
    with np.load(path, allow_pickle=False) as z:
        return str(z["post_frame"]) if "post_frame" in z.files else "own"


def roi_channels(masks: np.ndarray, post_frame: str, timepoints: int) -> np.ndarray:
    """``(timepoints*3, S, S)`` float32: the tumour ROI of each time point's three slices.

    ``masks`` (2, 3, S, S) as cropped. With ``post_frame`` "pre" both time points share the
    pre grid, so both get the pre (tumour) ROI; with "own" each keeps its own ROI.
    """
    if post_frame not in ("pre", "own"):
        raise ValueError(f"post_frame must be 'pre' or 'own', not {post_frame!r}")
    rois = [masks[0] if post_frame == "pre" else masks[t] for t in range(timepoints)]
    return np.ascontiguousarray(np.concatenate(rois).astype(np.float32))


def merge_timepoints(image: np.ndarray, roi: np.ndarray | None, timepoints: int) -> np.ndarray:
    """``(T*12, H, W)`` (+ ``(T*3, H, W)`` ROI) -> ``(C, H, W)`` for T = 1, ``(T, C, H, W)``
    for T = 2, with C = 12 (+ 3): each time point's ROI after its image channels."""
    h, w = image.shape[-2:]
    parts = [image.reshape(timepoints, CHANNELS_PER_TIMEPOINT, h, w)]
    if roi is not None:
        parts.append(roi.reshape(timepoints, N_SLICES, h, w))
    out = parts[0] if len(parts) == 1 else _cat(parts)
    return out[0] if timepoints == 1 else out


def _cat(parts: list) -> object:
    """Concatenate along the channel axis (1) for numpy arrays and torch tensors alike."""
    if isinstance(parts[0], np.ndarray):
        return np.concatenate(parts, axis=1)
    import torch

    return torch.cat([torch.as_tensor(p) for p in parts], dim=1)


def model_input(
    crops: np.ndarray, masks: np.ndarray, timepoints: int, roi: bool, post_frame: str = "own"
) -> np.ndarray:
    """The network input of one patient without augmentation (as the dataset builds it)."""
    image = stack_channels(crops, timepoints)
    r = roi_channels(masks, post_frame, timepoints) if roi else None
    return np.asarray(merge_timepoints(image, r, timepoints))


def stack_channels(crops: np.ndarray, timepoints: int) -> np.ndarray:
    """``(2, 4, 3, S, S)`` -> ``(timepoints*12, S, S)``: the first ``timepoints`` time points."""
    if timepoints not in (1, 2):
        raise ValueError("timepoints must be 1 (pre) or 2 (pre, post)")
    if crops.shape[0] < timepoints:
        raise RecurError(
            f"the crops hold {crops.shape[0]} time point(s); the model reads {timepoints}"
        )
    return np.ascontiguousarray(crops[:timepoints].reshape(-1, *crops.shape[-2:]))


class LoadCropsd(MapTransform):
    """Load ``d["path"]`` into ``d["image"]`` = :func:`stack_channels` of its crops and, with
    ``roi``, ``d["roi"]`` = :func:`roi_channels`."""

    def __init__(
        self,
        timepoints: int,
        path_key: str = "path",
        image_key: str = "image",
        roi: bool = False,
        roi_key: str = "roi",
    ):
        super().__init__(keys=[path_key])
        self.timepoints = timepoints
        self.path_key = path_key
        self.image_key = image_key
        self.roi = roi
        self.roi_key = roi_key

    def __call__(self, data: Mapping[Hashable, object]) -> dict:
        d = dict(data)
        path = str(d[self.path_key])
        crops, masks = load_crops(path, str(d.get("patient_id", "?")))
        d[self.image_key] = stack_channels(crops, self.timepoints)
        if self.roi:
            d[self.roi_key] = roi_channels(masks, crop_frame(path), self.timepoints)
        return d


class SplitTimepointsd(MapTransform):
    """``(T*12, H, W)`` -> ``(12, H, W)`` for one time point, ``(T, 12, H, W)`` for two; with
    ``roi_key`` the ROI channels are appended per time point (15 channels)."""

    def __init__(self, keys: str | Sequence[str], timepoints: int, roi_key: str | None = None):
        super().__init__(keys)
        self.timepoints = timepoints
        self.roi_key = roi_key

    def __call__(self, data: Mapping[Hashable, object]) -> dict:
        d = dict(data)
        roi = d.pop(self.roi_key) if self.roi_key is not None else None
        for key in self.key_iterator(d):
            d[key] = merge_timepoints(d[key], roi, self.timepoints)
        return d


@dataclass(frozen=True)
class Augmentation(SectionSettings):
    """Training-time augmentation (each transform applied with probability ``prob``): config
    section ``train.augment`` (meanings and defaults in ``schemas/config.schema.yaml``; build
    with :meth:`from_config`)."""

    SECTION = "train.augment"

    rotate_deg: float
    flip: bool
    intensity_scale: float
    intensity_shift: float
    prob: float
    flip_vertical: bool

    def __post_init__(self) -> None:
        if not 0 <= self.prob <= 1:
            raise RecurError(f"train.augment: prob must lie in [0, 1], not {self.prob}")
        if not 0 <= self.rotate_deg <= 180:
            raise RecurError(f"train.augment: rotate_deg outside [0, 180]: {self.rotate_deg}")
        if self.intensity_scale < 0 or self.intensity_shift < 0:
            raise RecurError("train.augment: intensity_scale and intensity_shift must be >= 0")

    def transforms(self, key: str = "image", spatial_keys: Sequence[str] = ()) -> list:
        """The MONAI random dictionary transforms, in order (rotate, flip, vertical flip, scale,
        shift). The spatial ones also move ``spatial_keys`` (the same draw), the intensity
        ones only ``key``."""
        out: list = []
        keys = [key, *spatial_keys]
        if self.rotate_deg > 0:
            out.append(
                RandRotated(
                    keys=keys,
                    range_x=math.radians(self.rotate_deg),
                    prob=self.prob,
                    keep_size=True,
                    mode="bilinear",
                    padding_mode="border",
                )
            )
        if self.flip:
            # axis 1 of (C, H, W) spatial dims (H, W) is W: a left-right (horizontal) flip
            out.append(RandFlipd(keys=keys, prob=self.prob, spatial_axis=1))
        if self.flip_vertical:
            # axis 0 of (H, W): an anterior-posterior flip (the crops' content -- tumour,
            # capsule, rim, satellites, ablation zone -- has no preferred orientation)
            out.append(RandFlipd(keys=keys, prob=self.prob, spatial_axis=0))
        if self.intensity_scale > 0:
            out.append(RandScaleIntensityd(keys=key, factors=self.intensity_scale, prob=self.prob))
        if self.intensity_shift > 0:
            out.append(RandShiftIntensityd(keys=key, offsets=self.intensity_shift, prob=self.prob))
        return out


@contextmanager
def plain_tensors() -> Iterator[None]:
    """Run MONAI transforms on plain tensors, without ``MetaTensor`` metadata tracking.

    The crops' pipeline ends in plain tensors anyway (:func:`make_transform`), so the
    metadata (affine, applied-operations stack) that each random transform would record is
    dropped unread; not recording it halves the augmentation's cost and leaves the numbers
    identical. Usable as a context manager or a decorator; restores the previous setting.
    """
    before = get_track_meta()
    set_track_meta(False)
    try:
        yield
    finally:
        set_track_meta(before)


def make_transform(
    timepoints: int, augment: Augmentation | None, seed: int = 0, roi: bool = False
) -> Compose:
    """Load -> (augmentation) -> split time points -> float32 tensors, as one MONAI Compose.

    ``augment=None`` gives the deterministic evaluation pipeline. The random transforms get
    their own random state from ``seed`` (MONAI's DataLoader re-seeds them per epoch from its
    seeded generator as well). ``roi``: append the ROI channels (module docstring).
    """
    steps: list = [LoadCropsd(timepoints, roi=roi)]
    if augment is not None:
        steps += augment.transforms("image", ["roi"] if roi else [])
    steps += [
        SplitTimepointsd("image", timepoints, "roi" if roi else None),
        EnsureTyped(keys=["image", "label"], dtype="float32", track_meta=False),
    ]
    tf = Compose(steps)
    if augment is not None:
        tf.set_random_state(seed=seed)
    return tf


def make_items(
    patient_ids: Sequence[str],
    crops_dir: str | Path,
    labels: Mapping[str, float] | None = None,
    aux: Mapping[str, Sequence[float]] | None = None,
) -> list[dict]:
    """Sample dicts ``{"patient_id", "path", "label"}`` (label NaN where unknown); with
    ``aux`` also ``"aux"``, the patient's auxiliary regression targets as float32 (NaN where
    a patient has none).

    A missing crop file is an error naming the patient.
    """
    crops_dir = Path(crops_dir)
    n_aux = len(next(iter(aux.values()))) if aux else 1
    items = []
    for pid in patient_ids:
        path = crops_dir / f"{pid}.npz"
        if not path.is_file():
            raise RecurError(f"patient {pid}: crop file crops/{path.name} not found")
        label = float("nan") if labels is None else float(labels.get(pid, float("nan")))
        item = {"patient_id": str(pid), "path": str(path), "label": np.float32(label)}
        if aux is not None:
            item["aux"] = np.asarray(aux.get(pid, [np.nan] * n_aux), dtype=np.float32)
        items.append(item)
    return items


def make_dataset(
    items: Sequence[dict],
    timepoints: int,
    augment: Augmentation | None = None,
    seed: int = 0,
    roi: bool = False,
) -> CacheDataset:
    """A MONAI ``CacheDataset`` that caches the loaded crops and augments on the fly."""
    return CacheDataset(
        data=list(items),
        transform=make_transform(timepoints, augment, seed, roi),
        cache_rate=1.0,
        num_workers=0,
        progress=False,
    )
