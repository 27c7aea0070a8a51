"""Pre and PrePost networks (recur.models.networks) and the crop dataset (recur.models.data)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from recur.errors import RecurError
from recur.models.data import (
    Augmentation,
    LoadCropsd,
    load_crops,
    make_items,
    make_transform,
    merge_timepoints,
    model_input,
    roi_channels,
    stack_channels,
)
from recur.models.networks import EnsembleNet, make_encoder

from ..fixtures import network


def test_forward_shapes():
    torch.manual_seed(0)
    pre, prepost = network("Pre").eval(), network("PrePost").eval()
    assert pre(torch.randn(2, 12, 64, 64)).shape == (2, 1)
    assert prepost(torch.randn(2, 2, 12, 64, 64)).shape == (2, 1)
    assert prepost(torch.randn(2, 2, 12, 128, 128)).shape == (2, 1)
    with pytest.raises(ValueError, match="B, T, 12"):
        prepost(torch.randn(2, 12, 64, 64))
    with pytest.raises(ValueError, match="B, 12"):
        pre(torch.randn(2, 2, 12, 64, 64))
    with pytest.raises(ValueError, match="unknown model"):
        network("Post")


def test_prepost_shares_one_encoder_and_reads_time_order():
    torch.manual_seed(0)
    pre, prepost = network("Pre"), network("PrePost")
    n_enc = sum(p.numel() for p in prepost.encoder.parameters())
    assert n_enc == sum(p.numel() for p in pre.encoder.parameters())
    n_rest = sum(p.numel() for n, p in prepost.named_parameters() if not n.startswith("encoder"))
    assert n_rest == 3 * (64 * 32 + 32 * 32 + 2 * 32) + 32 + 1  # GRU (3 gates) + head
    prepost.eval()
    x = torch.randn(2, 2, 12, 64, 64)
    with torch.no_grad():
        y = prepost(x)
        y_swapped = prepost(x.flip(1))  # (post, pre): the GRU sees a different sequence
        y_single = prepost(x[1:])  # batch items are independent in eval mode
    assert not torch.allclose(y, y_swapped)
    torch.testing.assert_close(y[1:], y_single)


def test_auxiliary_head_is_a_second_output_on_the_same_features():
    torch.manual_seed(0)
    for name, x in (
        ("Pre", torch.randn(3, 12, 64, 64)),
        ("PrePost", torch.randn(3, 2, 12, 64, 64)),
    ):
        plain = network(name).eval()
        assert plain.aux_head is None
        assert plain.forward_aux(x)[1] is None
        net = network(name, aux_outputs=2).eval()
        with torch.no_grad():
            logit, aux = net.forward_aux(x)
            feats = net.features(x)
            torch.testing.assert_close(logit, net(x))  # forward() is the ER logit alone
        assert logit.shape == (3, 1)
        assert aux.shape == (3, 2)
        torch.testing.assert_close(aux, feats @ net.aux_head.weight.T + net.aux_head.bias)
        # the ER part of the network is built exactly as without the auxiliary head
        torch.manual_seed(1)
        a = network(name).state_dict()
        torch.manual_seed(1)
        b = network(name, aux_outputs=1).state_dict()
        assert set(b) - set(a) == {"aux_head.weight", "aux_head.bias"}
        for k in a:
            torch.testing.assert_close(a[k], b[k])


def test_ensemble_is_the_mean_logit_of_its_members():
    torch.manual_seed(0)
    members = [network("PrePost", widths=(8, 8, 16, 16), hidden=4).eval() for _ in range(3)]
    net = EnsembleNet(members).eval()
    x = torch.randn(2, 2, 12, 32, 32)
    with torch.no_grad():
        want = (members[0](x) + members[1](x) + members[2](x)) / 3
        torch.testing.assert_close(net(x), want)
    assert net(x).shape == (2, 1)
    with pytest.raises(ValueError, match="at least one member"):
        EnsembleNet([])


def test_stack_channels_order_phase_major():
    crops = np.zeros((2, 4, 3, 4, 4), dtype=np.float32)
    for t in range(2):
        for p in range(4):
            for s in range(3):
                crops[t, p, s] = 100 * t + 10 * p + s
    one = stack_channels(crops, 1)
    both = stack_channels(crops, 2)
    assert one.shape == (12, 4, 4)
    assert both.shape == (24, 4, 4)
    assert one[10, 0, 0] == 31  # DP (phase 3), middle slice (1)
    assert both[12 + 10, 0, 0] == 131  # post DP middle slice


def _write(path, crops, masks=None):
    arrays = {"crops": crops}
    if masks is not None:
        arrays["masks"] = masks
    np.savez(path, **arrays)
    return path


def test_load_crops_errors_name_patient_and_file(tmp_path):
    good = np.zeros((2, 4, 3, 8, 8), np.float32)
    crops, masks = load_crops(_write(tmp_path / "A.npz", good), "A")
    assert crops.shape == (2, 4, 3, 8, 8)
    assert masks.shape == (2, 3, 8, 8)
    with pytest.raises(RecurError, match=r"patient B: crops/B\.npz.*expected \(2, 4, 3, S, S\)"):
        load_crops(_write(tmp_path / "B.npz", np.zeros((2, 4, 8, 8), np.float32)), "B")
    bad = good.copy()
    bad[0, 0, 0, 0, 0] = np.nan
    with pytest.raises(RecurError, match=r"patient C.*NaN"):
        load_crops(_write(tmp_path / "C.npz", bad), "C")
    (tmp_path / "D.npz").write_bytes(b"not a zip")
    with pytest.raises(RecurError, match=r"patient D: crops/D\.npz: cannot read"):
        load_crops(tmp_path / "D.npz", "D")
    with pytest.raises(RecurError, match=r"patient E: crop file crops/E\.npz not found"):
        make_items(["A", "E"], tmp_path)
    with pytest.raises(RecurError, match="patient B"):
        LoadCropsd(2)({"patient_id": "B", "path": str(tmp_path / "B.npz")})


def test_augmentation_identical_for_both_timepoints(tmp_path):
    rng = np.random.default_rng(0)
    pre = rng.standard_normal((4, 3, 32, 32)).astype(np.float32)
    crops = np.stack([pre, pre])  # post == pre
    _write(tmp_path / "X.npz", crops)
    item = make_items(["X"], tmp_path, {"X": 1.0})[0]
    aug = Augmentation.defaults(
        rotate_deg=30, flip=True, intensity_scale=0.2, intensity_shift=0.2, prob=1
    )
    out = make_transform(2, aug, seed=3)(item)["image"]
    assert out.shape == (2, 12, 32, 32)
    assert isinstance(out, torch.Tensor)
    assert out.dtype == torch.float32
    assert not torch.allclose(out[0], torch.from_numpy(pre.reshape(12, 32, 32)))  # changed
    torch.testing.assert_close(out[0], out[1])  # ... identically for pre and post
    plain = make_transform(1, None)(item)["image"]
    torch.testing.assert_close(plain, torch.from_numpy(pre.reshape(12, 32, 32)))


def test_encoder_resolution_with_and_without_max_pool():
    sizes = {}
    for max_pool in (True, False):
        enc = make_encoder(12, (16, 32, 64, 64), (1, 1, 1, 1), max_pool).eval()
        enc.layer4.register_forward_hook(lambda m, i, o, k=max_pool: sizes.__setitem__(k, o.shape))
        with torch.no_grad():
            assert enc(torch.randn(1, 12, 128, 128)).shape == (1, 64)
    assert sizes[True][-2:] == (4, 4)  # 128 / (2 stem * 2 pool * 2 * 2 * 2)
    assert sizes[False][-2:] == (8, 8)
    assert network("PrePost", max_pool=False)(torch.randn(2, 2, 12, 64, 64)).shape == (2, 1)


# --------------------------------------------------------------------------- ROI channels
def test_roi_channels_by_hand():
    masks = np.zeros((2, 3, 4, 4), np.uint8)
    masks[0, :, 1, 1] = 1  # tumour (pre)
    masks[1, :, 2:, 2:] = 1  # ablation zone (post)
    own = roi_channels(masks, "own", 2)
    assert own.shape == (6, 4, 4)
    assert own.dtype == np.float32
    np.testing.assert_array_equal(own[:3], masks[0])
    np.testing.assert_array_equal(own[3:], masks[1])
    # post crops on the pre grid: both time points carry the tumour outline
    pre = roi_channels(masks, "pre", 2)
    np.testing.assert_array_equal(pre[3:], masks[0])
    assert roi_channels(masks, "pre", 1).shape == (3, 4, 4)
    with pytest.raises(ValueError, match="post_frame"):
        roi_channels(masks, "post", 2)


def test_merge_timepoints_puts_each_roi_after_its_images():
    image = np.arange(24, dtype=np.float32)[:, None, None] * np.ones((24, 2, 2), np.float32)
    roi = -np.arange(1, 7, dtype=np.float32)[:, None, None] * np.ones((6, 2, 2), np.float32)
    out = merge_timepoints(image, roi, 2)
    assert out.shape == (2, 15, 2, 2)
    assert list(out[0, :, 0, 0]) == [*range(12), -1, -2, -3]
    assert list(out[1, :, 0, 0]) == [*range(12, 24), -4, -5, -6]
    assert merge_timepoints(image[:12], roi[:3], 1).shape == (15, 2, 2)
    assert merge_timepoints(image, None, 2).shape == (2, 12, 2, 2)
    t = merge_timepoints(torch.from_numpy(image), torch.from_numpy(roi), 2)
    torch.testing.assert_close(t, torch.from_numpy(out))


def test_roi_follows_the_rotation_but_not_the_intensity_jitter(tmp_path):
    rng = np.random.default_rng(1)
    crops = rng.standard_normal((2, 4, 3, 32, 32)).astype(np.float32)
    masks = np.zeros((2, 3, 32, 32), np.uint8)
    masks[:, :, 4:12, 20:28] = 1  # off-centre square, both time points
    crops[:, :, :, 4:12, 20:28] += 10.0  # the image is bright where the ROI is
    _write(tmp_path / "R.npz", crops, masks)
    item = make_items(["R"], tmp_path, {"R": 0.0})[0]
    aug = Augmentation.defaults(rotate_deg=90, intensity_scale=0.5, intensity_shift=0.5, prob=1)
    out = make_transform(2, aug, seed=5, roi=True)(item)["image"]
    assert out.shape == (2, 15, 32, 32)
    roi = out[0, 12].numpy()
    # a jittered ROI would be scaled by up to 1.5 and shifted by up to 0.5
    assert roi.min() == pytest.approx(0.0, abs=1e-6)
    assert roi.max() == pytest.approx(1.0)
    # the ROI moved with the image: its pixels are the bright ones
    bright = out[0, 11].numpy() > 5.0 * out[0, 11].numpy().std() / 2
    inside = roi > 0.5
    assert (bright & inside).sum() >= 0.8 * inside.sum()
    plain = make_transform(2, None, roi=True)(item)["image"]
    np.testing.assert_array_equal(plain.numpy(), model_input(crops, masks, 2, True))


def test_networks_with_roi_channels():
    torch.manual_seed(0)
    pre, prepost = network("Pre", in_channels=15), network("PrePost", in_channels=15)
    assert pre.eval()(torch.randn(2, 15, 64, 64)).shape == (2, 1)
    assert prepost.eval()(torch.randn(2, 2, 15, 64, 64)).shape == (2, 1)
    with pytest.raises(ValueError, match="B, T, 15"):
        prepost(torch.randn(2, 2, 12, 64, 64))
