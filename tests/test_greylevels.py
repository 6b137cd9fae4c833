"""Grey values to HU from the image's own air and soft-tissue levels."""

from __future__ import annotations

import numpy as np
import pytest

from cochseg3d.greylevels import AIR_HU, TISSUE_HU, GreyLevels, measure, to_hu
from cochseg3d.metal import metal_mask, threshold_levels
from cochseg3d.preprocessing import Preprocessing
from cochseg3d.volume import Volume


def _head(rng: np.random.Generator, n: int = 40) -> np.ndarray:
    """A volume of air, soft tissue, bone and a little metal, in HU (shuffled voxels)."""
    size = n ** 3
    parts = [rng.normal(AIR_HU, 25, int(0.12 * size)), rng.normal(TISSUE_HU, 25, int(0.55 * size)),
             rng.normal(1300, 180, int(0.33 * size))]
    v = np.concatenate(parts)
    v = np.concatenate([v, rng.normal(3000, 50, size - v.size)])
    return rng.permutation(v).reshape(n, n, n).astype(np.float32)


@pytest.mark.parametrize("gain,offset", [(1.0, 0.0), (1.0, 1000.0), (0.75, 1024.0), (1.4, -200.0)])
def test_gain_and_offset_recovered(gain, offset):
    hu = _head(np.random.default_rng(0))
    g = measure(hu * gain + offset)
    assert g.method == "air+tissue"
    assert g.gain == pytest.approx(gain, rel=0.03)
    # what matters: HU recovered across the range the network sees
    back = g.to_hu(np.array([-1000.0, 0.0, 2000.0]) * gain + offset)
    np.testing.assert_allclose(back, [-1000.0, 0.0, 2000.0], atol=40.0)


def test_hu_image_is_left_alone():
    vol = Volume(_head(np.random.default_rng(1)), (0.3, 0.3, 0.3), (0, 0, 0), np.eye(3))
    out, g = to_hu(vol)
    assert g.is_identity(tol_hu=15.0) or np.allclose(out.array, vol.array, atol=15.0)


def test_constant_fill_is_not_taken_for_air():
    # HU + 1000 stored, and a field-of-view outside written as 0 (would read as -1000 HU air)
    hu = _head(np.random.default_rng(2))
    raw = hu + 1000.0
    raw[:, :, :12] = 0.0
    g = measure(raw)
    assert g.method == "air+tissue"
    assert g.offset == pytest.approx(1000.0, abs=40.0)


def test_tight_crop_without_air_corrects_the_offset_only():
    rng = np.random.default_rng(3)
    v = np.concatenate([rng.normal(TISSUE_HU, 25, 40_000), rng.normal(1300, 180, 24_000)])
    g = measure(rng.permutation(v).reshape(40, 40, 40) + 500.0)
    assert g.method == "tissue"
    assert g.gain == 1.0
    assert g.offset == pytest.approx(500.0, abs=40.0)


def test_flat_image_is_not_changed():
    g = measure(np.full((8, 8, 8), 7.0, np.float32))
    assert g == GreyLevels()
    vol = Volume(np.full((8, 8, 8), 7.0, np.float32), (1, 1, 1), (0, 0, 0), np.eye(3))
    assert to_hu(vol)[0] is vol


def test_metal_threshold_follows_the_scanner():
    hu = _head(np.random.default_rng(4))
    ref = threshold_levels(hu)
    raw = threshold_levels(hu * 0.8 + 1024.0)
    assert raw["threshold"] == pytest.approx(ref["threshold"] * 0.8 + 1024.0, rel=0.03)
    np.testing.assert_array_equal(metal_mask(hu), metal_mask(hu * 0.8 + 1024.0))


def test_preprocessing_measures_by_default_and_old_checkpoints_read_as_stored():
    assert Preprocessing().grey_levels == "measured"
    assert Preprocessing.from_dict({"spacing_mm": 0.3}).grey_levels == "as_stored"
    with pytest.raises(ValueError, match="grey_levels"):
        Preprocessing(grey_levels="guess")
    vol = Volume(_head(np.random.default_rng(5)) + 1000.0, (0.3, 0.3, 0.3), (0, 0, 0), np.eye(3))
    calibrated = Preprocessing().hu(vol)
    assert abs(float(np.median(calibrated.array)) - float(np.median(vol.array)) + 1000.0) < 40.0
    assert Preprocessing(grey_levels="as_stored").hu(vol) is vol


def test_phantom_stored_without_rescale_segments_like_hu():
    """The network sees the same input whether a phantom is stored as HU or as HU + 1000."""
    from cochseg3d.inference import load_model, predict_canonical
    from cochseg3d.phantom import generate_patient

    model, pre, _ = load_model(None)
    pre = Preprocessing.from_dict({**pre.to_dict(), "grey_levels": "measured"})
    a = generate_patient(11, preset="small", shape=48, saturation_hu=4095.0, offset_hu=0.0, gain=1.0)
    b = generate_patient(11, preset="small", shape=48, saturation_hu=4095.0 + 1000.0, offset_hu=1000.0, gain=1.0)
    pa, pb = predict_canonical(model, a.image, pre), predict_canonical(model, b.image, pre)
    assert (pa >= 0.5).sum() > 0
    inter = ((pa >= 0.5) & (pb >= 0.5)).sum()
    assert 2 * inter / ((pa >= 0.5).sum() + (pb >= 0.5).sum()) > 0.95


def test_offset_mode_moves_the_tissue_level_and_keeps_the_gain():
    """A cupped scan (air-to-tissue step 0.66 of HU's) stored as HU + 1000: "offset" brings soft tissue
    to its HU and leaves the gain, so bone is not lifted towards metal as dividing by 0.66 would."""
    hu = _head(np.random.default_rng(6))
    vol = Volume(hu * 0.66 + 1000.0, (0.3, 0.3, 0.3), (0, 0, 0), np.eye(3))
    out = Preprocessing(grey_levels="offset").hu(vol).array
    bone = hu > 900
    assert abs(float(np.median(out[np.abs(hu - TISSUE_HU) < 50])) - TISSUE_HU) < 20.0
    np.testing.assert_allclose(np.median(out[bone]), np.median(hu[bone]) * 0.66 + TISSUE_HU * 0.34, rtol=0.05)
    measured = Preprocessing(grey_levels="measured").hu(vol).array
    assert np.median(measured[bone]) > np.median(out[bone]) + 300.0
    flat = Volume(np.full((8, 8, 8), 7.0, np.float32), (1, 1, 1), (0, 0, 0), np.eye(3))
    assert Preprocessing(grey_levels="offset").hu(flat) is flat


@pytest.mark.parametrize("offset", [0.0, 1000.0])
def test_heavy_noise_without_an_air_peak_is_not_read_as_air_and_tissue(offset):
    """220 HU noise, the little air partial-volumed into no peak: the two peaks are tissue and bone,
    not air and tissue (which would shift the scan by a whole bone level)."""
    rng = np.random.default_rng(7)
    size = 40 ** 3
    air = rng.uniform(-1000, -300, int(0.05 * size))
    tissue = rng.normal(TISSUE_HU, 25, int(0.6 * size))
    bone = rng.normal(1300, 180, size - air.size - tissue.size)
    hu = np.concatenate([air, tissue, bone])
    hu = (rng.permutation(hu) + rng.normal(0, 220, size)).reshape(40, 40, 40).astype(np.float32)
    g = measure(hu + offset)
    assert g.method == "tissue"
    assert g.offset == pytest.approx(offset, abs=60.0)
