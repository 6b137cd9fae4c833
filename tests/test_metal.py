"""Metal thresholding: offset robustness, bone kept out, coronal slice indices."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from cochseg3d.metal import auto_threshold_hu, metal_mask, metal_slices, remove_small_components, threshold_levels
from cochseg3d.volume import Volume


def _head(*, offset_hu: float = 0.0, metal: bool = True, seed: int = 0, n: int = 40) -> tuple[Volume, np.ndarray]:
    """Air, a tissue ball, a dense-bone shell and a blurred helical wire of metal (HU, 0.3 mm)."""
    rng = np.random.default_rng(seed)
    z, y, x = np.mgrid[:n, :n, :n].astype(float)
    c = (n - 1) / 2
    r = np.sqrt((z - c) ** 2 + (y - c) ** 2 + (x - c) ** 2)
    img = np.full((n, n, n), -1000.0)
    img[r < n * 0.45] = 40.0
    img[(r > n * 0.3) & (r < n * 0.4)] = 1600.0
    truth = np.zeros((n, n, n), bool)
    if metal:
        t = np.linspace(0, 1.5 * np.pi, 300)
        pts = np.stack([c + 3 * np.sin(t / 2), c + 6 * np.sin(t), c + 6 * np.cos(t)], 1).round().astype(int)
        truth[tuple(pts.T)] = True
        truth = ndimage.binary_dilation(truth, iterations=2)  # ~1.2 mm thick, like a contact
        img[truth] = 4000.0
    img = ndimage.gaussian_filter(img, 0.7) + rng.normal(0.0, 30.0, img.shape) + offset_hu
    return Volume(img.astype(np.float32), (0.3, 0.3, 0.3)), truth


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2.0 * float((a & b).sum()) / float(a.sum() + b.sum())


@pytest.mark.parametrize("offset", [-700.0, 0.0, 600.0])
def test_auto_threshold_follows_grey_offset(offset: float) -> None:
    base, _ = _head()
    shifted, truth = _head(offset_hu=offset)
    assert auto_threshold_hu(shifted) == pytest.approx(auto_threshold_hu(base) + offset, abs=25.0)
    mask = metal_mask(shifted)
    near = ndimage.binary_dilation(truth, iterations=2)
    assert mask.sum() > 0.3 * truth.sum() and not (mask & ~near).any()  # the wire, and no bone


@pytest.mark.parametrize("vendor,noise,offset", [("MED-EL", 20.0, 0.0), ("Cochlear", 120.0, 300.0),
                                                 ("AB", 60.0, -400.0)])
def test_auto_mask_matches_phantom_truth(vendor: str, noise: float, offset: float) -> None:
    from cochseg3d.phantom import generate_patient

    case = generate_patient(11, preset="small", vendor=vendor, noise_hu=noise, offset_hu=offset)
    truth = case.label.array > 0
    mask = metal_mask(case.image)
    assert _dice(mask, truth) > 0.65
    spacing = case.label.spacing_mm[::-1]
    far = ndimage.distance_transform_edt(~truth, sampling=spacing) > 1.0
    assert float((mask & far).sum()) * float(np.prod(spacing)) < 15.0  # mm^3 of bone / streaks


def test_levels_are_ordered() -> None:
    vol, _ = _head(offset_hu=-300.0)
    lv = threshold_levels(vol)
    assert lv["air_cut"] < lv["tissue"] < lv["bone"] < lv["threshold"] < lv["metal"]
    assert lv["has_metal"] == 1.0


def test_no_metal_gives_empty_mask() -> None:
    vol, _ = _head(metal=False)
    assert threshold_levels(vol)["has_metal"] == 0.0
    assert auto_threshold_hu(vol) > float(vol.array.max())
    assert not metal_mask(vol).any()
    assert metal_slices(vol) == []


def test_explicit_threshold_and_small_components() -> None:
    arr = np.zeros((10, 10, 10), np.float32)
    arr[2:5, 2:5, 2:5] = 3000.0  # 27 voxels
    arr[8, 8, 8] = 3000.0  # a speck
    m = metal_mask(arr, threshold_hu=2000.0, min_size_voxels=2)
    assert m.sum() == 27 and not m[8, 8, 8]
    assert metal_mask(arr, threshold_hu=2000.0, min_size_voxels=1).sum() == 28
    assert metal_mask(arr, threshold_hu=3500.0).sum() == 0
    assert remove_small_components(np.zeros((3, 3, 3), bool), min_size_voxels=5).sum() == 0


def test_metal_slices_are_canonical_coronal_indices() -> None:
    # identity direction (LPS): index j runs anterior -> posterior, so canonical k == source j
    arr = np.full((12, 16, 20), 0.0, np.float32)
    arr[3:6, 5:7, 8:11] = 3000.0
    vol = Volume(arr, (0.5, 0.4, 0.6))
    assert metal_slices(vol, threshold_hu=2000.0) == [5, 6]
    # j axis pointing anterior: the same array lies the other way round in the coronal stack
    flipped = Volume(arr, (0.5, 0.4, 0.6), direction=np.diag([1.0, -1.0, 1.0]))
    assert metal_slices(flipped, threshold_hu=2000.0) == [16 - 1 - 6, 16 - 1 - 5]
    # ... while the same physical image stored flipped keeps its coronal indices
    same = Volume(arr[:, ::-1, :].copy(), (0.5, 0.4, 0.6), direction=np.diag([1.0, -1.0, 1.0]))
    assert metal_slices(same, threshold_hu=2000.0) == [5, 6]
