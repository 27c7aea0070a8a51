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
    lh = qc_images.line_height()
    assert lh >= qc_images.FONT_SIZE  # labels readable: a 14 px font
    # width: row labels (the longest, + 2 gaps) + 3 panels + 4 gaps
    assert arr.shape[1] == qc_images.text_width("post") + 2 * 4 + 3 * 20 + 4 * 4
    # height: title and column-label lines + gap + 2 panels + 3 gaps
    assert arr.shape[0] == 2 * lh + 4 + 2 * 10 + 3 * 4
    assert (arr == 0).all(axis=2).sum() >= 6 * 10 * 20  # the six black panels are there
    with pytest.raises(ValueError, match="same size"):
        qc_images.montage([[panel, np.zeros((5, 5, 3), dtype=np.uint8)]])


def test_scale_bar_picks_the_longest_round_length_that_fits():
    assert qc_images.scale_bar(256, 0.375) == (20, 53)  # 0.3 * 256 px = 28.8 mm
    assert qc_images.scale_bar(100, 0.5) == (10, 20)  # 15 mm room
    assert qc_images.scale_bar(10, 0.5) == (1, 2)  # nothing fits: the shortest
    with pytest.raises(ValueError, match="> 0"):
        qc_images.scale_bar(100, 0.0)


def test_orientation_letters_follow_the_direction_matrix():
    assert qc_images.orientation_letters(np.eye(3)) == ("R", "L", "A", "P")  # LPS: radiological
    flipped = np.diag([-1.0, -1.0, 1.0])  # RAS-like axes: columns run left -> right
    assert qc_images.orientation_letters(flipped) == ("L", "R", "P", "A")
    # coronal, rows run along the matrix's second column, +z: inferior -> superior
    coronal = np.array([[1.0, 0, 0], [0, 0, -1], [0, 1, 0]])
    assert qc_images.orientation_letters(coronal) == ("R", "L", "I", "S")
    note = qc_images.orientation_note(("R", "L", "A", "P"))
    assert "image right = patient's left (L)" in note


def test_montage_draws_scale_bar_and_orientation_on_each_row():
    grey = np.full((130, 120, 3), 128, dtype=np.uint8)
    gap = 4
    kw = {"title": "P0001", "col_labels": ["PS", "AP"], "gap": gap}
    plain = np.asarray(qc_images.montage([[grey, grey], [grey, grey]], **kw))
    arr = np.asarray(
        qc_images.montage(
            [[grey, grey], [grey, grey]],
            **kw,
            mm_per_pixel=[0.5, 0.25],
            orientation=("R", "L", "A", "P"),
            note="image left = patient's right (R)",
        )
    )
    top = 2 * qc_images.line_height() + gap
    assert arr.shape[0] > plain.shape[0]  # the note line
    for i, mpp in enumerate((0.5, 0.25)):
        _, px = qc_images.scale_bar(120, mpp)
        y0 = top + gap + i * (130 + gap)
        x0 = gap
        # the bar: a white run of `px` pixels, 8 px above the panel's bottom edge
        row = arr[y0 + 130 - 8, x0 : x0 + 120]
        white = (row == 255).all(axis=1)
        assert white[6 : 6 + px].all()
        assert not white[6 + px : 6 + px + 10].any()
        assert (row[5] == 0).all()  # its black rim
        # the letters change the first panel only; the second stays plain grey
        assert (arr[y0 : y0 + 130, x0 + 120 + gap : x0 + 240 + gap] == 128).all()
        assert (arr[y0 : y0 + 30, x0 + 40 : x0 + 80] != 128).any()  # "A" at the top
    assert (plain[top + gap : top + gap + 130, gap : gap + 120] == 128).all()
    # a small panel keeps R and L, and leaves its top and bottom to the image and the bar
    small = np.full((60, 60, 3), 128, dtype=np.uint8)
    arr = np.asarray(qc_images.montage([[small]], gap=gap, orientation=("R", "L", "A", "P")))
    y0 = 2 * gap  # no title or labels: a gap above the panel row and one inside it
    assert (arr[y0 : y0 + 15, gap + 20 : gap + 40] == 128).all()  # no "A"
    assert (arr[y0 + 20 : y0 + 40, gap : gap + 15] != 128).any()  # "R"
    with pytest.raises(ValueError, match="one mm_per_pixel per row"):
        qc_images.montage([[grey], [grey]], mm_per_pixel=[0.5])


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
