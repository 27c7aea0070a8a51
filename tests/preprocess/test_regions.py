"""Regions in physical space (recur.preprocess.regions): hand-worked boxes on plain, anisotropic
and oblique grids, clipping, recentred transforms."""

from __future__ import annotations

import math

import numpy as np
import pytest
import SimpleITK as sitk

from recur.preprocess.regions import (
    box_region,
    crop_to_box,
    image_centre,
    recentred,
    roi_box_corners,
    same_grid,
)


def grid(size, spacing=(1.0, 1.0, 1.0), origin=(0.0, 0.0, 0.0), direction=None) -> sitk.Image:
    img = sitk.Image(list(size), sitk.sitkUInt8)
    img.SetSpacing(spacing)
    img.SetOrigin(origin)
    if direction is not None:
        img.SetDirection(direction)
    return img


def test_roi_box_corners_anisotropic():
    # voxels x 2..4, y 3, z 1..2 at spacing (0.5, 1, 4) mm, origin (10, 20, 30)
    mask = grid((8, 6, 4), (0.5, 1.0, 4.0), (10.0, 20.0, 30.0))
    for x, z in ((2, 1), (4, 2)):
        mask[x, 3, z] = 1
    corners = roi_box_corners(mask)
    assert corners.shape == (8, 3)
    np.testing.assert_allclose(corners.min(axis=0), (11.0, 23.0, 34.0))
    np.testing.assert_allclose(corners.max(axis=0), (12.0, 23.0, 38.0))
    with pytest.raises(ValueError, match="empty"):
        roi_box_corners(grid((4, 4, 4)))


def test_box_region_grows_by_mm_per_axis_spacing_and_clips():
    img = grid((20, 20, 10), (0.5, 1.0, 4.0), (10.0, 20.0, 30.0))
    # one point at voxel (8, 5, 4): x 14.0, y 25.0, z 46.0 mm
    point = [(14.0, 25.0, 46.0)]
    # 2 mm: 4 voxels in x, 2 in y, 0.5 -> 1 voxel in z (rounded outwards)
    assert box_region(img, point, 2.0) == ([4, 3, 3], [9, 5, 3])
    # 5 mm: 10 voxels in x (clipped at 0), 5 in y, 1.25 -> 2 in z
    assert box_region(img, point, 5.0) == ([0, 0, 2], [19, 11, 5])
    # a huge margin: the whole image
    assert box_region(img, point, 1000.0) == ([0, 0, 0], [20, 20, 10])
    # a box that misses the image altogether
    with pytest.raises(ValueError, match="outside"):
        box_region(img, [(-100.0, 25.0, 46.0)], 5.0)


def test_box_region_on_oblique_grid():
    # in-plane rotation by 90 degrees: index x runs along physical +y, index y along -x
    direction = (0.0, -1.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 1.0)
    img = grid((10, 20, 5), (1.0, 2.0, 3.0), (0.0, 0.0, 0.0), direction)
    # physical (-4, 3, 6): index x = 3 (y / 1 mm), index y = 2 (-x / 2 mm), index z = 2
    p = (-4.0, 3.0, 6.0)
    np.testing.assert_allclose(img.TransformPhysicalPointToContinuousIndex(p), (3, 2, 2))
    # 2 mm: 2 voxels along index x (1 mm), 1 along index y (2 mm), 1 along z (3 mm: 0.67 -> 1)
    assert box_region(img, [p], 2.0) == ([1, 1, 1], [5, 3, 3])
    # the region keeps its physical position: its first voxel is index (1, 1, 1) of the image
    sub = crop_to_box(img, [p], 2.0)
    assert sub.GetSize() == (5, 3, 3)
    np.testing.assert_allclose(sub.GetOrigin(), img.TransformIndexToPhysicalPoint((1, 1, 1)))
    np.testing.assert_allclose(sub.GetDirection(), direction)
    # a 45-degree grid: the box of two points spans the rotated hull
    c, s = math.cos(math.pi / 4), math.sin(math.pi / 4)
    img45 = grid((40, 40, 4), (1.0, 1.0, 1.0), (0.0, 0.0, 0.0), (c, -s, 0, s, c, 0, 0, 0, 1))
    pts = [(0.0, 0.0, 1.0), (0.0, 10.0, 1.0)]  # index (0, 0) and (7.07, 7.07)
    assert box_region(img45, pts, 0.0) == ([0, 0, 1], [9, 9, 1])


def test_crop_to_box_whole_image_is_itself_and_values_kept():
    img = sitk.GetImageFromArray(np.arange(4 * 5 * 6, dtype=np.float32).reshape(4, 5, 6))
    assert crop_to_box(img, [(2.0, 2.0, 2.0)], 100.0) is img
    sub = crop_to_box(img, [(2.0, 2.0, 2.0)], 1.0)  # index 1..3 on every axis
    np.testing.assert_array_equal(
        sitk.GetArrayFromImage(sub), sitk.GetArrayFromImage(img)[1:4, 1:4, 1:4]
    )


def test_recentred_keeps_the_mapping():
    tx = sitk.Euler3DTransform()
    tx.SetCenter((10.0, -5.0, 3.0))
    tx.SetRotation(0.02, -0.03, 0.05)
    tx.SetTranslation((1.0, 2.0, -3.0))
    out = recentred(tx, (50.0, 40.0, -20.0))
    assert out.GetName() == "Euler3DTransform"
    np.testing.assert_allclose(out.GetCenter(), (50.0, 40.0, -20.0))
    for p in [(0.0, 0.0, 0.0), (100.0, -50.0, 30.0), (50.0, 40.0, -20.0)]:
        np.testing.assert_allclose(out.TransformPoint(p), tx.TransformPoint(p), atol=1e-9)
    # by hand: a 90-degree turn about z, centre (0, 0, 0) -> (1, 0, 0): t' = (A - I) c'
    turn = sitk.Euler3DTransform((0.0, 0.0, 0.0), 0.0, 0.0, math.pi / 2, (0.0, 0.0, 0.0))
    np.testing.assert_allclose(
        recentred(turn, (1.0, 0.0, 0.0)).GetTranslation(), (-1, 1, 0), atol=1e-12
    )
    aff = sitk.AffineTransform(3)
    aff.SetMatrix((1.1, 0.1, 0.0, 0.0, 0.9, 0.0, 0.0, 0.0, 1.0))
    aff.SetTranslation((3.0, 0.0, 1.0))
    out = recentred(aff, (7.0, 8.0, 9.0))
    assert out.GetName() == "AffineTransform"
    np.testing.assert_allclose(
        out.TransformPoint((1.0, 2.0, 3.0)), aff.TransformPoint((1.0, 2.0, 3.0))
    )


def test_image_centre_and_same_grid():
    img = grid((11, 21, 3), (2.0, 1.0, 5.0), (-10.0, 0.0, 100.0))
    np.testing.assert_allclose(image_centre(img), (0.0, 10.0, 105.0))
    other = grid((11, 21, 3), (2.0, 1.0, 5.0), (-10.0, 0.0, 100.0))
    assert same_grid(img, other)
    other.SetOrigin((-10.0, 0.0, 100.5))
    assert not same_grid(img, other)
