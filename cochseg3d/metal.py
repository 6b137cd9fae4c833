"""Metal (electrode) thresholding of CBCT volumes, robust to grey-value offsets.

CBCT grey values are not calibrated HU: a scanner may shift every value by several hundred units
(and scale them a little). A fixed threshold therefore paints either dense bone or nothing. The
automatic threshold here is derived from the image's own histogram:

* the soft-tissue level ``t`` is the histogram peak of the lower Otsu class without air (below
  -500 HU), or of the upper class when the lower one is (almost) only air;
* the dense-bone level ``b`` is a high percentile of the body voxels (the otic capsule is the
  densest bone; the electrode is far too small to move that percentile);
* the metal level ``m`` is the mean of the brightest voxels (the electrode core, often saturated);
* the threshold is ``b + 0.45 (m - b)``, a little below halfway from dense bone to metal, and never
  below the half-maximum between tissue and metal ``t + 0.5 (m - t)`` (the edge of a blurred bright
  object). Bone noise, streaks and blooming spread upwards from ``b``. On the phantoms (three
  vendors, noise 20-120 HU, offsets 0 / -400 HU; ``scripts/bench_annotation.py``) Dice is flat
  between 0.2 and 0.45 while the volume painted away from the electrode falls fivefold from 0.3
  to 0.45; 0.6 and above lose the electrode's rim.

Grey values are first put on the HU scale by the image's own air and soft-tissue levels
(:mod:`cochseg3d.greylevels`), so a scanner storing HU + 1000 or a gain off by tens of per cent
meets the same rules. Tissue and bone move with any offset left, and so does the metal level unless the scanner clips it at a
fixed ceiling (3071 / 4095): the threshold follows the offset fully or in part. When the brightest voxels
are not clearly brighter than dense bone (no metal in the image) the threshold is placed just
above the maximum, so the mask is empty rather than painted bone.
"""

from __future__ import annotations

import logging

import numpy as np
from scipy import ndimage
from skimage.filters import threshold_otsu

from cochseg3d.greylevels import measure as measure_grey_levels
from cochseg3d.volume import Volume, canonical

log = logging.getLogger(__name__)

#: at most this many voxels enter the histogram statistics (strided subsample, deterministic)
_MAX_SAMPLES = 2_000_000
#: percentile of body voxels taken as the dense-bone level
_BONE_PERCENTILE = 99.0
#: metal must be at least this much brighter than dense bone, as a fraction of (bone - tissue)
_MIN_METAL_CONTRAST = 0.25
#: the threshold's place between dense bone (0) and metal (1)
_BONE_TO_METAL = 0.45
#: a histogram mode below this is air, above it tissue (air ~ -1000 HU, soft tissue ~ 0 HU)
_AIR_BELOW_HU = -500.0
#: default minimum connected-component size of a metal mask (voxels)
DEFAULT_MIN_SIZE_VOXELS = 4


def _sample(array: np.ndarray) -> np.ndarray:
    flat = np.asarray(array).ravel()
    step = max(1, flat.size // _MAX_SAMPLES)
    v = flat[::step].astype(np.float32, copy=False)
    return v[np.isfinite(v)]


def _mode(values: np.ndarray) -> float:
    """Peak of the smoothed histogram of ``values`` (clipped floor/ceiling spikes left out)."""
    lo, hi = float(values.min()), float(values.max())
    inner = values[(values > lo) & (values < hi)]
    if inner.size < 16:
        return float(np.median(values))
    lo, hi = np.percentile(inner, [0.5, 99.5])
    if hi <= lo:
        return float(lo)
    counts, edges = np.histogram(inner, bins=256, range=(float(lo), float(hi)))
    counts = ndimage.gaussian_filter1d(counts.astype(float), 2.0)
    i = int(np.argmax(counts))
    return float(0.5 * (edges[i] + edges[i + 1]))


def _tissue_peak(v: np.ndarray, cut: float) -> float:
    """The soft-tissue / fluid level: the histogram mode of the lower Otsu class without its air.

    Otsu splits air from tissue in a wide field of view, but tissue from bone in a tight
    temporal-bone crop. Air sits near -1000 HU and soft tissue near 0 HU; CBCT offsets of a few
    hundred HU keep them on either side of -500 HU. When the lower class holds (almost) only air,
    tissue is the upper class's mode.
    """
    low = v[(v <= cut) & (v > _AIR_BELOW_HU)]
    if low.size >= 0.05 * v.size:
        return _mode(low)
    high = v[v > cut]
    return _mode(high) if high.size else _mode(v)


def threshold_levels(volume: Volume | np.ndarray) -> dict[str, float]:
    """The histogram levels behind :func:`auto_threshold_hu` (for logging and the widget).

    Args:
        volume: a CT/CBCT volume (HU, any offset) or its array.

    Returns:
        ``{"air_cut", "tissue", "bone", "metal", "threshold", "has_metal"}`` in HU
        (``has_metal`` is 1.0 or 0.0).
    """
    arr = volume.array if isinstance(volume, Volume) else np.asarray(volume)
    grey = measure_grey_levels(arr)
    if grey.method == "none" or grey.is_identity():
        return _levels_hu(arr)
    # the rules speak HU (air below -500): measure in HU, answer in the image's own units
    hu = _levels_hu(grey.to_hu(arr))
    return {k: (v if k == "has_metal" else grey.from_hu(v)) for k, v in hu.items()}


def _levels_hu(arr: np.ndarray) -> dict[str, float]:
    v = _sample(arr)
    if v.size == 0:
        raise ValueError("volume has no finite voxel values")
    vmax = float(np.max(arr))
    if float(v.min()) == float(v.max()):
        return {"air_cut": vmax, "tissue": vmax, "bone": vmax, "metal": vmax,
                "threshold": vmax + 1.0, "has_metal": 0.0}
    air_cut = float(threshold_otsu(v))
    body = v[v > air_cut]
    # a crop without air: Otsu splits tissue from bone instead; the body is then everything
    if body.size < 0.3 * v.size:
        body = v
    tissue = _tissue_peak(v, air_cut)
    bone = float(np.percentile(body, _BONE_PERCENTILE))
    # the electrode core: the brightest voxels, at least 8, about 1e-5 of the volume
    n_top = int(min(arr.size, max(8, arr.size // 100_000)))
    flat = np.asarray(arr).ravel()
    metal = float(np.mean(np.partition(flat, flat.size - n_top)[flat.size - n_top:]))
    has_metal = metal - bone > _MIN_METAL_CONTRAST * max(bone - tissue, 1.0)
    if has_metal:
        threshold = max(tissue + 0.5 * (metal - tissue), bone + _BONE_TO_METAL * (metal - bone))
    else:
        threshold = vmax + 1.0
    return {"air_cut": air_cut, "tissue": tissue, "bone": bone, "metal": metal,
            "threshold": float(threshold), "has_metal": float(has_metal)}


def auto_threshold_hu(volume: Volume | np.ndarray) -> float:
    """An HU threshold that separates the electrode from bone, derived from the image.

    Robust to CBCT grey-value offsets: every level it uses (tissue peak, dense bone, metal core)
    is measured on the image, so adding a constant to an unclipped image adds it to the threshold.

    Args:
        volume: a CT/CBCT volume in HU (any offset) or its array.

    Returns:
        The threshold in the volume's grey units (HU). Above the image maximum when the image
        shows no metal, so that a mask thresholded with it is empty.
    """
    levels = threshold_levels(volume)
    log.debug("metal threshold levels: %s", levels)
    return levels["threshold"]


def remove_small_components(mask: np.ndarray, *, min_size_voxels: int) -> np.ndarray:
    """``mask`` without its connected components (26-connected) smaller than ``min_size_voxels``."""
    from skimage.morphology import remove_small_objects

    mask = np.asarray(mask, dtype=bool)
    if min_size_voxels <= 1 or not mask.any():
        return mask
    return remove_small_objects(mask, max_size=min_size_voxels - 1, connectivity=mask.ndim)


def metal_mask(
    volume: Volume | np.ndarray,
    *,
    threshold_hu: float | None = None,
    min_size_voxels: int = DEFAULT_MIN_SIZE_VOXELS,
) -> np.ndarray:
    """Boolean metal mask on the volume's own grid (``[k, j, i]`` like ``volume.array``).

    Args:
        volume: a CT/CBCT volume (HU) or its array.
        threshold_hu: voxels ``>=`` this are metal; ``None`` uses :func:`auto_threshold_hu`.
        min_size_voxels: connected components (26-connected) smaller than this are dropped.

    Returns:
        ``bool`` array of the volume's shape.
    """
    arr = volume.array if isinstance(volume, Volume) else np.asarray(volume)
    thr = auto_threshold_hu(arr) if threshold_hu is None else float(threshold_hu)
    return remove_small_components(arr >= thr, min_size_voxels=min_size_voxels)


def metal_slices(
    volume: Volume,
    *,
    threshold_hu: float | None = None,
    min_size_voxels: int = DEFAULT_MIN_SIZE_VOXELS,
    min_pixels: int = 1,
) -> list[int]:
    """Canonical coronal indices ``k`` whose slice ``canonical(volume).array[k]`` shows metal.

    Args:
        volume: a CT/CBCT volume (HU) on any grid.
        threshold_hu: metal threshold; ``None`` uses :func:`auto_threshold_hu`.
        min_size_voxels: 3D components smaller than this are ignored (noise, specks).
        min_pixels: a slice needs at least this many metal pixels to count.

    Returns:
        Sorted list of coronal indices (anterior -> posterior).
    """
    can = canonical(volume)
    mask = metal_mask(can, threshold_hu=threshold_hu, min_size_voxels=min_size_voxels)
    counts = mask.reshape(mask.shape[0], -1).sum(axis=1)
    return [int(k) for k in np.flatnonzero(counts >= max(1, min_pixels))]
