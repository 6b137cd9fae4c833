"""predict_canonical: shapes, geometry of the in-plane resampling, 2.5D stacking, post-processing."""

import numpy as np
import pytest
import torch

from cochseg3d.inference import postprocess, predict_canonical, predict_naive, run_segmentation, stack_context
from cochseg3d.preprocessing import Preprocessing
from cochseg3d.volume import Volume, canonical
from tests.helpers import BrightDetector

CORONAL = np.array([[1, 0, 0], [0, 0, -1], [0, -1, 0]], dtype=float)
SAGITTAL = np.array([[0, 0, 1], [1, 0, 0], [0, -1, 0]], dtype=float)


def _oblique():
    from scipy.spatial.transform import Rotation

    return Rotation.from_euler("xyz", [20, -15, 25], degrees=True).as_matrix()


def _tiny_unet(in_channels: int):
    from monai.networks.nets import UNet

    torch.manual_seed(0)
    return UNet(spatial_dims=2, in_channels=in_channels, out_channels=2, channels=(4, 8, 16), strides=(2, 2))


def _bright_box_volume(shape=(12, 40, 50), spacing=(0.12, 0.15, 0.4), direction=None, box=None):
    """Air-ish background (-1000 HU) with a metal box (3000 HU); returns (volume, box mask)."""
    arr = np.full(shape, -1000, np.int16)
    mask = np.zeros(shape, bool)
    box = box or (slice(4, 8), slice(10, 22), slice(30, 41))
    mask[box] = True
    arr[mask] = 3000
    vol = Volume(arr, spacing, (5.0, -3.0, 12.0), np.eye(3) if direction is None else direction)
    return vol, mask


def _dice(a, b):
    a, b = a.astype(bool), b.astype(bool)
    return 2 * (a & b).sum() / max(1, a.sum() + b.sum())


@pytest.mark.parametrize("direction", [np.eye(3), CORONAL], ids=["axial", "coronal"])
def test_probability_lands_on_the_bright_structure(direction):
    # anisotropic in-plane pixels (0.12 x 0.15 mm) resampled to 0.3 mm and back
    vol, truth = _bright_box_volume(direction=direction)
    pre = Preprocessing(spacing_mm=0.3, roi_size=(32, 32))
    prob = predict_canonical(BrightDetector(), vol, pre, batch_size=4, overlap=0.25)
    can_truth = canonical(vol.with_array(truth.astype(np.uint8)), is_label=True).array.astype(bool)
    assert prob.shape == canonical(vol).array.shape
    assert prob.dtype == np.float32 and 0.0 <= prob.min() and prob.max() <= 1.0
    assert _dice(prob >= 0.5, can_truth) > 0.85
    # centre of mass within a fraction of a source voxel
    com_p = np.array(np.nonzero(prob >= 0.5)).mean(axis=1)
    com_t = np.array(np.nonzero(can_truth)).mean(axis=1)
    np.testing.assert_allclose(com_p, com_t, atol=0.6)
    assert prob[~np.asarray(
        __import__("scipy.ndimage", fromlist=["x"]).binary_dilation(can_truth, iterations=3))].max() < 0.05


@pytest.mark.parametrize("direction", [np.eye(3), CORONAL, SAGITTAL, _oblique()],
                         ids=["axial", "coronal", "sagittal", "oblique"])
def test_resampling_to_network_pixels_and_back_does_not_move_a_sphere(direction):
    shape = (30, 34, 38)
    vol = Volume(np.zeros(shape, np.float32), (0.22, 0.27, 0.35), (-3.0, 4.0, 7.0), direction)
    kk, jj, ii = np.indices(shape)
    lps = vol.index_to_lps(np.stack([ii, jj, kk], -1).reshape(-1, 3)).reshape(*shape, 3)
    centre = vol.index_to_lps(np.array(vol.size) / 2.0) + [0.37, -0.21, 0.13]
    vol.array[:] = np.where(np.linalg.norm(lps - centre, axis=-1) < 2.0, 3000, 40)
    can = canonical(vol)
    prob = predict_canonical(BrightDetector(), can, Preprocessing(spacing_mm=0.3, roi_size=(64, 64)))
    found = can.index_to_lps(np.argwhere(prob >= 0.5)[:, ::-1].mean(axis=0))
    np.testing.assert_allclose(found, centre, atol=0.04)  # mm; a voxel is 0.22-0.35 mm


def test_context_channels_follow_the_slice_axis_with_edge_replication():
    slices = torch.arange(5, dtype=torch.float32)[:, None, None].expand(5, 2, 2)
    st = stack_context(slices, 2, 0, 5)
    assert st.shape == (5, 5, 2, 2)
    np.testing.assert_array_equal(st[0, :, 0, 0].numpy(), [0, 0, 0, 1, 2])
    np.testing.assert_array_equal(st[4, :, 0, 0].numpy(), [2, 3, 4, 4, 4])
    np.testing.assert_array_equal(st[2, :, 0, 0].numpy(), [0, 1, 2, 3, 4])


def test_25d_model_sees_the_next_slice():
    # a detector reading channel k+1 (the next coronal slice) fires one slice before the structure
    vol, truth = _bright_box_volume(shape=(10, 32, 32), spacing=(0.3, 0.3, 0.3), box=(slice(8, 10), slice(8, 20), slice(8, 20)))
    pre = Preprocessing(spacing_mm=0.3, context=1, roi_size=(32, 32))
    can = canonical(vol)
    can_truth = canonical(vol.with_array(truth.astype(np.uint8)), is_label=True).array.astype(bool)
    ks = np.nonzero(can_truth.any(axis=(1, 2)))[0]
    prob = predict_canonical(BrightDetector(in_channels=3, channel=2), can, pre, chunk_slices=3)
    fired = np.nonzero((prob >= 0.5).any(axis=(1, 2)))[0]
    # the last slice replicates itself as its "next" slice, so it still fires
    expected = sorted(set(ks - 1) | {ks.max()} if ks.max() == can.array.shape[0] - 1 else set(ks - 1))
    np.testing.assert_array_equal(fired, expected)


def test_batched_slice_inferer_matches_naive_loop_when_one_patch_covers_the_slice():
    vol, _ = _bright_box_volume(shape=(6, 30, 28), spacing=(0.3, 0.3, 0.3))
    vol.array[:] = np.random.default_rng(1).integers(-1000, 3000, vol.array.shape)
    pre = Preprocessing(spacing_mm=0.3, context=1, roi_size=(32, 32))
    net = _tiny_unet(3)
    a = predict_canonical(net, vol, pre, batch_size=4, overlap=0.0, chunk_slices=4)
    b = predict_naive(net, vol, pre)
    np.testing.assert_allclose(a, b, atol=1e-4)


def test_chunking_and_overlap_do_not_change_a_pointwise_model():
    vol, _ = _bright_box_volume()
    pre = Preprocessing(spacing_mm=0.3, roi_size=(16, 16))
    a = predict_canonical(BrightDetector(), vol, pre, overlap=0.5, chunk_slices=5, batch_size=3)
    b = predict_canonical(BrightDetector(), vol, pre, overlap=0.0, chunk_slices=64)
    np.testing.assert_allclose(a, b, atol=1e-5)


def test_postprocess_keeps_array_and_near_pieces_drops_far_and_tiny():
    m = np.zeros((40, 40, 80), bool)
    m[20, 20, 5:60] = True  # a thin array, 55 voxels long
    m[19:22, 19:22, 5:60] = True
    m[20, 20, 62:66] = True  # a piece 2 voxels beyond its tip
    m[2:12, 2:12, 70:80] = True  # a thick blob (bone), larger than the array, far away
    m[35, 35, 10] = True  # a single-voxel speck
    out = postprocess(m, (0.2, 0.2, 0.2), min_component_mm3=0.01, keep_distance_mm=1.0)
    assert out[20, 20, 30] and out[20, 20, 64]
    assert not out[5, 5, 75] and not out[35, 35, 10]


def test_postprocess_keeps_a_chain_of_separate_contacts_over_a_longer_lone_lead():
    # ten blooming contacts 2.4 mm apart (1.6 mm blobs) and, 3.6 mm away, a 0.8 mm thick lead
    # longer than the chain's largest piece: the chain holds more thin length, so it is the array
    m = np.zeros((40, 60, 140), bool)
    for n in range(10):
        m[16:24, 16:24, 5 + 12 * n: 13 + 12 * n] = True
    m[18:22, 42:46, 20:80] = True  # the lead, 12 mm long
    out = postprocess(m, (0.2, 0.2, 0.2), min_component_mm3=0.01, keep_distance_mm=3.0)
    assert all(out[20, 20, 9 + 12 * n] for n in range(10))
    assert not out[20, 44, 50]


def _arc_array(shape=(90, 120, 120)):
    """A thin curved array: a 0.9 mm wide tube along 250 degrees of a 10.5 mm circle (0.3 mm voxels)."""
    m = np.zeros(shape, bool)
    for t in np.linspace(0.0, np.radians(250.0), 2000):
        j, i = int(round(60 + 35 * np.cos(t))), int(round(60 + 35 * np.sin(t)))
        m[19:22, j - 1:j + 2, i - 1:i + 2] = True
    return m


def test_postprocess_reports_when_the_catalogue_would_keep_another_chain():
    array = _arc_array()
    m = array.copy()
    k, j, i = np.ogrid[:90, :120, :120]
    screw = (k >= 50) & (k < 63) & ((j - 60) ** 2 + (i - 100) ** 2 <= 6.7 ** 2)  # 4 mm x 4 mm titanium
    m |= screw
    fillings = np.zeros_like(m)  # 51 bars 1.2 x 1.2 x 9 mm, 0.6 mm apart: more tube-like volume than the array
    for a in (60, 66, 72):
        for b in range(10, 110, 6):
            fillings[a:a + 4, b:b + 4, 20:50] = True
    m |= fillings
    report = {}
    out = postprocess(m, (0.3, 0.3, 0.3), report=report)
    # the most tube-like chain is kept (as before); the array-long thin one is named for review
    assert out[fillings].all() and not out[array].any() and not out[screw].any()
    assert report["array_rule"] == "catalogue_disagrees" and report["catalogue_path_mm"] > 40.0
    assert report["array_path_mm"] < report["catalogue_path_mm"] and report["n_other_metal"] == 2
    expected = (screw.sum() + array.sum()) * 0.3 ** 3
    assert report["other_metal_mm3"] == pytest.approx(expected, abs=0.01)
    # without the fillings the array is both the most tube-like chain and the catalogue's
    report = {}
    out = postprocess(array | screw, (0.3, 0.3, 0.3), report=report)
    assert np.array_equal(out, array) and report["array_rule"] == "catalogue" and report["n_other_metal"] == 1


def test_postprocess_leaves_a_lone_array_alone_and_reports_no_other_metal():
    array = _arc_array()
    report = {}
    assert np.array_equal(postprocess(array, (0.3, 0.3, 0.3), report=report), array)
    assert report["other_metal_mm3"] == 0.0 and report["n_other_metal"] == 0
    assert report["array_rule"] == "catalogue"
    report = {}
    assert not postprocess(np.zeros((4, 4, 4), bool), (0.3, 0.3, 0.3), report=report).any()
    assert report["array_rule"] is None and report["other_metal_mm3"] == 0.0


def test_run_segmentation_returns_label_on_source_grid():
    vol, truth = _bright_box_volume(direction=CORONAL)
    pre = Preprocessing(spacing_mm=0.3, roi_size=(32, 32))
    lab = run_segmentation(vol, BrightDetector(), preprocessing=pre).label
    assert lab.grid.allclose(vol.grid, atol_mm=1e-9)
    assert lab.array.dtype == np.uint8
    assert _dice(lab.array, truth) > 0.85
