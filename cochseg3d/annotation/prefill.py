"""Threshold pre-fill of a canonical coronal stack: scopes (slices, in-plane ROI) and the whole image."""

from __future__ import annotations

from typing import Sequence

import numpy as np

from cochseg3d.metal import auto_threshold_hu, remove_small_components
from cochseg3d.volume import CANONICAL_DIRECTION, Grid, Volume, canonical, from_canonical

#: a slice range ``(first, last)``, both inclusive, in canonical coronal indices
SliceRange = tuple[int, int]
#: an in-plane box ``(row0, row1, col0, col1)``, half-open, in coronal-slice pixels
Box = tuple[int, int, int, int]


def as_canonical(image: Volume) -> Volume:
    """``canonical(image)``, or ``image`` itself (no copy) when it already is a canonical stack
    that remembers its source grid (``meta["source_grid"]``)."""
    if "source_grid" in image.meta and np.allclose(image.direction, CANONICAL_DIRECTION, atol=1e-6):
        return image
    return canonical(image)

def scope_range(shape: Sequence[int], slices: int | SliceRange | None) -> SliceRange:
    """``(first, last)`` inclusive coronal indices of a pre-fill scope, clipped to the volume.

    Args:
        shape: canonical array shape ``(K, rows, cols)``.
        slices: ``None`` for the whole volume, ``k`` for one slice, ``(first, last)`` for a range.
    """
    n = int(shape[0])
    if slices is None:
        return 0, n - 1
    if isinstance(slices, (int, np.integer)):
        first = last = int(slices)
    else:
        first, last = (int(s) for s in slices)
        first, last = min(first, last), max(first, last)
    if last < 0 or first >= n:
        raise ValueError(f"slice range {first}..{last} lies outside the volume's 0..{n - 1} coronal slices")
    return max(first, 0), min(last, n - 1)


def roi_mask(roi: Box | np.ndarray | None, plane: tuple[int, int]) -> np.ndarray | None:
    """The in-plane bool mask of a box ``(row0, row1, col0, col1)`` or bool mask; ``None`` for no ROI."""
    if roi is None:
        return None
    if isinstance(roi, np.ndarray) and roi.dtype == bool:
        if roi.shape[-2:] != plane:
            raise ValueError(f"ROI mask shape {roi.shape} does not match the coronal slice {plane}")
        return roi
    r0, r1, c0, c1 = (int(v) for v in roi)
    m = np.zeros(plane, bool)
    m[max(r0, 0):max(r1, 0), max(c0, 0):max(c1, 0)] = True
    if not m.any():
        raise ValueError(f"ROI {tuple(roi)} does not overlap the coronal slice of {plane[0]}x{plane[1]} pixels")
    return m


def prefill_region(
    array: np.ndarray,
    *,
    threshold_hu: float,
    slices: int | SliceRange | None = None,
    roi: Box | np.ndarray | None = None,
    min_size_voxels: int = 1,
) -> tuple[tuple[slice, slice, slice], np.ndarray]:
    """Threshold pre-fill of one scope of a canonical coronal stack.

    Args:
        array: canonical image ``[k, row, col]`` in HU.
        threshold_hu: voxels ``>=`` this become electrode.
        slices: scope; ``None`` whole volume, ``k`` one slice, ``(first, last)`` inclusive range.
        roi: optional in-plane region of interest (box ``(row0, row1, col0, col1)`` or a bool mask
            of the slice shape, or of the scope's shape); nothing outside it is painted.
        min_size_voxels: connected components (26-connected within the scope; 8-connected on a
            single slice) smaller than this are dropped.

    Returns:
        ``(region, block)``: the index slices of the scope and the uint8 0/1 mask inside it.
    """
    first, last = scope_range(array.shape, slices)
    region = (slice(first, last + 1), slice(None), slice(None))
    block = np.asarray(array[region]) >= float(threshold_hu)
    roi_m = roi_mask(roi, tuple(array.shape[1:]))
    if roi_m is not None:
        block &= roi_m if roi_m.ndim == 2 else roi_m[region] if roi_m.shape == array.shape else roi_m
    if min_size_voxels > 1 and block.any():
        # label only the bounding box of the candidates: metal is sparse, the volume is not
        nz = [np.flatnonzero(block.any(axis=tuple(a for a in range(3) if a != ax))) for ax in range(3)]
        box = tuple(slice(int(n[0]), int(n[-1]) + 1) for n in nz)
        block[box] = remove_small_components(block[box], min_size_voxels=min_size_voxels)
    return region, block.astype(np.uint8)


def prefill_canonical(
    array: np.ndarray,
    *,
    threshold_hu: float | str | None = "auto",
    slices: int | SliceRange | None = None,
    roi: Box | np.ndarray | None = None,
    min_size_voxels: int = 4,
) -> np.ndarray:
    """Full-size uint8 0/1 pre-fill of a canonical coronal stack (zeros outside the scope).

    Args:
        array: canonical image ``[k, row, col]`` in HU.
        threshold_hu: a number (HU), or ``"auto"`` / ``None`` for :func:`cochseg3d.metal.auto_threshold_hu`
            of the whole image (not just the scope, whose histogram may show no bone or no metal).
        slices, roi, min_size_voxels: see :func:`prefill_region`.
    """
    thr = resolve_threshold(array, threshold_hu)
    out = np.zeros(array.shape, np.uint8)
    region, block = prefill_region(array, threshold_hu=thr, slices=slices, roi=roi, min_size_voxels=min_size_voxels)
    out[region] = block
    return out


def resolve_threshold(image: Volume | np.ndarray, threshold_hu: float | str | None) -> float:
    """A number from ``threshold_hu`` (HU), computing the automatic one for ``"auto"`` / ``None``."""
    if threshold_hu is None or (isinstance(threshold_hu, str) and threshold_hu.strip().lower() == "auto"):
        return float(auto_threshold_hu(image))
    try:
        return float(threshold_hu)
    except ValueError as exc:
        raise ValueError(f"threshold {threshold_hu!r} is neither a number (HU) nor 'auto'") from exc


def prefill(
    image: Volume,
    *,
    threshold_hu: float | str | None = "auto",
    slices: int | SliceRange | None = None,
    roi: Box | np.ndarray | None = None,
    min_size_voxels: int = 4,
) -> Volume:
    """Threshold pre-fill of ``image``; the label comes back on the image's own (source) grid.

    Args:
        image: CT/CBCT volume in HU on any grid.
        threshold_hu: HU number or ``"auto"``.
        slices: scope in canonical coronal indices (``None`` = whole volume).
        roi: in-plane region of interest on the coronal slice (see :func:`prefill_region`).
        min_size_voxels: smallest connected component kept.

    Returns:
        uint8 0/1 label Volume with ``image``'s size, spacing, origin and direction;
        ``meta["threshold_hu"]`` holds the threshold used.
    """
    if slices is None and roi is None and "source_grid" not in image.meta:
        # the whole volume: threshold the source grid itself (no resampling of oblique series)
        thr = resolve_threshold(image, threshold_hu)
        _, block = prefill_region(image.array, threshold_hu=thr, min_size_voxels=min_size_voxels)
        out = image.with_array(block)
    else:
        can = as_canonical(image)
        thr = resolve_threshold(can, threshold_hu)
        lab = prefill_canonical(can.array, threshold_hu=thr, slices=slices, roi=roi, min_size_voxels=min_size_voxels)
        out = from_canonical(can.with_array(lab), Grid.from_dict(can.meta["source_grid"]), is_label=True)
        out.array = out.array.astype(np.uint8)
    out.meta = {k: v for k, v in image.meta.items() if k != "source_grid"}
    out.meta["threshold_hu"] = thr
    return out
