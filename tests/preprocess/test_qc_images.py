"""Per-patient QC pictures (recur.preprocess.qc_images): pure array functions with hand-worked
values."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from recur.preprocess import qc_images


def test_window_maps_percentiles_to_0_and_255():
    img = np.arange(101, dtype=float).reshape(1, 101)  # percentiles are the values themselves
    out = qc_images.window(img, 10, 90)
    assert out.dtype == np.uint8
    assert out[0, 10] == 0
    assert out[0, 90] == 255
    assert out[0, 0] == 0
    assert out[0, 100] == 255
    assert out[0, 50] == 128  # (50 - 10) / 80 * 255 = 127.5 -> 128
    assert not qc_images.window(np.full((3, 3), 7.0)).any()  # constant: black
    with pytest.raises(ValueError, match="2-D"):
        qc_images.window(np.zeros((2, 2, 2)))


def test_outline_of_a_square_is_its_border_ring():
    m = np.zeros((5, 5), dtype=np.uint8)
    m[1:4, 1:4] = 1
    edge = qc_images.outline(m)
    ring = m.astype(bool).copy()
    ring[2, 2] = False  # the one interior pixel
    np.testing.assert_array_equal(edge, ring)
    assert not qc_images.outline(np.zeros((4, 4))).any()


def test_overlay_colours_only_the_outline():
    grey = np.full((5, 5), 100, dtype=np.uint8)
    m = np.zeros((5, 5), dtype=bool)
    m[1:4, 1:4] = True
    rgb = qc_images.overlay(grey, [(m, qc_images.RED)])
    assert rgb.shape == (5, 5, 3)
    assert tuple(rgb[1, 1]) == qc_images.RED
    assert tuple(rgb[2, 2]) == (100, 100, 100)  # inside the ROI: grey kept
    assert tuple(rgb[0, 0]) == (100, 100, 100)
    with pytest.raises(ValueError, match="differs"):
        qc_images.overlay(grey, [(np.ones((4, 4)), qc_images.RED)])


def test_upscale_and_montage_layout():
    p = np.zeros((2, 3, 3), dtype=np.uint8)
    assert qc_images.upscale(p, 2).shape == (4, 6, 3)
    assert qc_images.upscale(p[..., 0], 3).shape == (6, 9)
    panel = np.zeros((10, 20, 3), dtype=np.uint8)
    img = qc_images.montage(
        [[panel, panel, panel], [panel, panel, panel]],
        title="P0001",
        col_labels=["a", "b", "c"],
        row_labels=["pre", "post"],
        gap=4,
    )
    arr = np.asarray(img)
    # width: row labels (8 px per character of the longest, + gap) + 3 panels + 4 gaps
    assert arr.shape[1] == 8 * 4 + 4 + 3 * 20 + 4 * 4
    # height: title and column-label lines (14 px each) + gap + 2 panels + 3 gaps
    assert arr.shape[0] == 2 * 14 + 4 + 2 * 10 + 3 * 4
    assert (arr == 0).all(axis=2).sum() >= 6 * 10 * 20  # the six black panels are there
    with pytest.raises(ValueError, match="same size"):
        qc_images.montage([[panel, np.zeros((5, 5, 3), dtype=np.uint8)]])


def test_save_png_is_a_plain_png_without_text_chunks(tmp_path):
    out = tmp_path / "qc.png"
    qc_images.save_png(qc_images.text_image(["patient P0001: EXCLUDED by QC", "reason"]), out)
    data = out.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    for chunk in (b"tEXt", b"iTXt", b"zTXt", b"tIME"):
        assert chunk not in data
    with Image.open(out) as im:
        assert im.mode == "RGB"
        assert im.size[0] == 640
    assert [p.name for p in tmp_path.iterdir()] == ["qc.png"]  # no temporary left
