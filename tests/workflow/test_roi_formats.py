"""The tiny study with its ROI masks written as DICOM SEG and as RTSTRUCT (synthetic.roi_format).

Each run goes end to end (``snakemake --cores 2``) and is compared with the NIfTI-mask run
(``tiny_study``): the checked masks must equal the NIfTI ones (Dice 1 measured for both formats;
the floor asked is 0.99 for SEG, 0.95 for RTSTRUCT) and the crops, which every model reads,
must be the same arrays.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import SimpleITK as sitk

from ..conftest import TINY_CONFIG, failed_logs, run_snakemake

pytestmark = pytest.mark.slow

#: Smallest Dice of a placed mask against the NIfTI mask, per format.
DICE_FLOOR = {"seg": 0.99, "rtstruct": 0.95}


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    return float(2 * np.logical_and(a, b).sum() / (a.astype(bool).sum() + b.astype(bool).sum()))


@pytest.fixture(scope="module", params=["seg", "rtstruct"])
def dicom_mask_study(request, tmp_path_factory) -> tuple[str, Path]:
    roi_format = request.param
    work = tmp_path_factory.mktemp(f"study_{roi_format}")
    config = TINY_CONFIG.replace("seed: 11}", f"seed: 11, roi_format: {roi_format}}}")
    assert config != TINY_CONFIG
    (work / "tiny.yaml").write_text(config, encoding="utf-8")
    res = run_snakemake(work, "--cores", "2")
    if res.returncode != 0:
        pytest.fail(f"workflow failed:\n{res.stderr[-6000:]}\n{failed_logs(work)[-6000:]}")
    return roi_format, work


def test_the_cohort_holds_dicom_masks_named_in_the_roi_column(dicom_mask_study):
    from recur.preprocess.dicom_rois import mask_format

    roi_format, work = dicom_mask_study
    cohort = work / "results" / "synthetic" / "cohort"
    rois = pd.read_csv(cohort / "rois.csv", dtype=str)
    assert set(rois["roi"]) == {"Tumour", "Ablation zone"}
    assert {mask_format(cohort / m) for m in rois["mask"]} == {roi_format}
    assert (
        "'format': '" + roi_format + "'" in (work / "results/logs/check_mask/P0001.log").read_text()
    )


def test_placed_masks_equal_the_nifti_masks(dicom_mask_study, tiny_study):
    roi_format, work = dicom_mask_study
    paths = sorted((tiny_study / "results" / "masks").glob("*/*.nii.gz"))
    assert len(paths) == 2 * 26
    dice = []
    for path in paths:
        ref = sitk.ReadImage(str(path))
        got = sitk.ReadImage(str(work / path.relative_to(tiny_study)))
        assert got.GetOrigin() == ref.GetOrigin()
        assert got.GetDirection() == ref.GetDirection()
        dice.append(_dice(sitk.GetArrayFromImage(got), sitk.GetArrayFromImage(ref)))
    assert min(dice) >= DICE_FLOOR[roi_format], dice


def test_the_crops_are_the_nifti_runs(dicom_mask_study, tiny_study):
    _, work = dicom_mask_study
    crops = sorted((tiny_study / "results" / "crops").glob("*.npz"))
    assert crops
    for path in crops:
        with np.load(path) as ref, np.load(work / path.relative_to(tiny_study)) as got:
            assert sorted(ref.files) == sorted(got.files)
            for key in ref.files:
                np.testing.assert_array_equal(got[key], ref[key], err_msg=f"{path.name} {key}")


def test_the_study_tables_are_the_nifti_runs(dicom_mask_study, tiny_study):
    _, work = dicom_mask_study
    for name in ("table2.csv", "table1.csv"):
        ref = pd.read_csv(tiny_study / "results" / "tables" / name)
        got = pd.read_csv(work / "results" / "tables" / name)
        pd.testing.assert_frame_equal(got, ref)
