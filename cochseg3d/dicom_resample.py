"""Resampling along the slice axis for DICOM loading: filling unreadable or missing slices,
non-uniform steps onto a uniform one, and gantry tilt onto an orthogonal grid (as dcm2niix does)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from cochseg3d.volume import Volume

if TYPE_CHECKING:
    from cochseg3d.dicom_series import SeriesInfo

# the name users and tests filter on, wherever the code lives
log = logging.getLogger("cochseg3d.dicom")


def _slice_at(stack: np.ndarray, pos: np.ndarray, t: float, ftype: type, rows: np.ndarray | None = None) -> np.ndarray:
    """The slice of ``stack`` at ``t`` mm along k, from its slices ``rows`` (default all) at the
    ascending positions ``pos[rows]``: linear between the two around ``t``, the nearer end slice
    outside them, a slice within 1e-3 mm of ``t`` as it is. ``ftype`` is the arithmetic's float."""
    rows = np.arange(len(stack)) if rows is None else np.asarray(rows)
    p = pos[rows]
    hi = int(np.searchsorted(p, t - 1e-6))
    if hi >= len(p):
        return stack[rows[-1]]
    if hi == 0 or abs(p[hi] - t) <= 1e-3:
        return stack[rows[hi]]
    lo = hi - 1
    w = (t - p[lo]) / (p[hi] - p[lo])
    v = (1 - w) * stack[rows[lo]].astype(ftype) + w * stack[rows[hi]].astype(ftype)
    return np.rint(v) if stack.dtype.kind in "iu" else v


def _fill_slices(stored: np.ndarray, bad: Sequence[int], positions: np.ndarray) -> None:
    """Replace slices ``bad`` by linear interpolation between the nearest good slices along k."""
    good = np.setdiff1d(np.arange(stored.shape[0]), bad)
    for k in bad:
        stored[k] = _slice_at(stored, positions, positions[k], np.float64, rows=good)


def _regularise(vol: Volume, positions: np.ndarray, step: float, *, filled: bool) -> Volume:
    """Linear interpolation along k onto a uniform step (gap filling / non-uniform spacing)."""
    rel = positions - positions[0]
    n_new = int(round(rel[-1] / step)) + 1
    src = vol.array
    out = np.empty((n_new,) + src.shape[1:], dtype=np.float32 if src.dtype.kind == "f" else src.dtype)
    for t_idx in range(n_new):
        out[t_idx] = _slice_at(src, rel, t_idx * step, np.float32)
    what = "filled missing slices" if filled else "resampled non-uniform slices"
    log.warning("%s: %s by linear interpolation (%d -> %d slices at %.4g mm)",
                vol.meta.get("source"), what, len(rel), n_new, step)
    spacing = (vol.spacing_mm[0], vol.spacing_mm[1], step)
    return Volume(out, spacing, vol.origin_mm, vol.direction, {**vol.meta, "interpolated_slices": what})


def _untilt(array: np.ndarray, info: SeriesInfo, positions: np.ndarray, spacing, meta) -> Volume:
    """Resample a gantry-tilted (sheared) stack onto the orthogonal grid of its slice planes."""
    import SimpleITK as sitk

    n = len(positions)
    step_vec = (positions[-1] - positions[0]) / (n - 1)
    sheared_dir = info.direction.copy()
    sheared_dir[:, 2] = step_vec / np.linalg.norm(step_vec)
    img = sitk.GetImageFromArray(np.ascontiguousarray(array))
    img.SetOrigin(tuple(positions[0]))
    img.SetSpacing((spacing[0], spacing[1], float(np.linalg.norm(step_vec))))
    img.SetDirection(tuple(sheared_dir.ravel()))
    direction = info.direction
    along = float(np.dot(step_vec, info.normal))
    # output grid: same in-plane axes, k along the normal, covering the sheared stack's extent
    corners = np.array([[i, j, k] for i in (0, info.columns - 1) for j in (0, info.rows - 1) for k in (0, n - 1)])
    m = sheared_dir @ np.diag([spacing[0], spacing[1], np.linalg.norm(step_vec)])
    lps = corners @ m.T + positions[0]
    local = (lps - positions[0]) @ direction
    lo, hi = local.min(axis=0), local.max(axis=0)
    out_spacing = (spacing[0], spacing[1], abs(along))
    size = [int(np.ceil((h - l) / s - 1e-6)) + 1 for l, h, s in zip(lo, hi, out_spacing)]
    ref = sitk.Image(size, sitk.sitkUInt8)
    ref.SetSpacing(out_spacing)
    ref.SetOrigin(tuple(positions[0] + direction @ lo))
    ref.SetDirection(tuple(direction.ravel()))
    default = float(array.min()) if array.size else 0.0
    res = sitk.Resample(img, ref, sitk.Transform(), sitk.sitkLinear, default, sitk.sitkFloat32)
    log.warning("%s: gantry tilt in series %s: resampled onto an orthogonal grid (%s -> %s)",
                info.folder, info.label, img.GetSize(), res.GetSize())
    out = Volume.from_sitk(res, {**meta, "tilt_corrected": True})
    if array.dtype.kind in "iu":
        out.array = np.rint(out.array).astype(array.dtype)
    return out
