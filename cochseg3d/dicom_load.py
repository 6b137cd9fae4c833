"""DICOM pixel loading: one discovered series group to an oriented :class:`~cochseg3d.volume.Volume`.

Slices are read straight from the file (uncompressed little endian) or decoded by pydicom; one
slice that cannot be read refuses the series by default, naming the file and the reason, unless
the caller asks to interpolate it. Gaps, non-uniform steps and gantry tilt are handled here too.
"""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from cochseg3d.dicom_header import SkippedFile, _float
from cochseg3d.volume import Volume

if TYPE_CHECKING:
    from cochseg3d.dicom import SeriesInfo, SliceHeader

log = logging.getLogger("cochseg3d.dicom")

#: how to fill a gap, named in every gap error (library option and CLI flag)
GAP_HINT = "Pass on_gap='interpolate' (command line: --on-gap interpolate) to fill them from their neighbours."
#: largest series loaded at once (bytes of stored pixels); beyond it the header is broken or the
#: machine cannot hold it, and the user hears so before anything is allocated
MAX_SERIES_BYTES = 16 * 2**30
#: slice steps may differ from the series' step by this fraction before the series counts as non-uniform
SPACING_RTOL = 0.01


def _step_tol(steps: np.ndarray) -> float:
    return max(SPACING_RTOL * float(np.median(np.abs(steps))), 1e-3)


def _regular_step(steps: np.ndarray) -> float:
    """The series' slice step: the most common step (robust to a few gaps)."""
    med = float(np.median(steps))
    small = steps[steps <= med * (1 + SPACING_RTOL)]
    return float(np.median(small)) if small.size else med


# --- pixel loading --------------------------------------------------------------------------------
def _read_raw(header: SliceHeader, out: np.ndarray) -> None:
    """Copy one slice's uncompressed little-endian pixel bytes straight into ``out``."""
    with open(header.path, "rb", buffering=0) as f:
        f.seek(header.pixel_offset)  # type: ignore[arg-type]
        view = memoryview(out.reshape(-1).view(np.uint8))
        n = f.readinto(view)
    if n != view.nbytes:
        raise ValueError(f"{header.path}: truncated pixel data ({n} of {view.nbytes} bytes)")


def _decode(header: SliceHeader, out: np.ndarray) -> None:
    """Decode one slice with pydicom (compressed transfer syntaxes via the pylibjpeg plugins)."""
    from pydicom.pixels import pixel_array

    try:
        arr = pixel_array(os.fspath(header.path), index=header.frame)
    except Exception as exc:
        # pydicom lists every plugin's complaint on its own line: one line, the first complaints
        why = " ".join(str(exc).split())
        why = why if len(why) <= 240 else why[:237] + "..."
        raise ValueError(f"{header.path}: cannot decode pixel data ({type(exc).__name__}: {why})") from exc
    if arr.shape != out.shape:
        raise ValueError(f"{header.path}: decoded shape {arr.shape}, expected {out.shape}")
    out[...] = arr


def _stored_dtype(info: SeriesInfo) -> np.dtype:
    if info.bits_allocated == 8:
        return np.dtype(np.int8 if info.pixel_representation else np.uint8)
    if info.bits_allocated == 16:
        return np.dtype("<i2" if info.pixel_representation else "<u2")
    if info.bits_allocated == 32:
        return np.dtype("<i4" if info.pixel_representation else "<u4")
    raise ValueError(f"{info.folder}: BitsAllocated {info.bits_allocated} is not supported")


class SeriesGapError(ValueError):
    """Slices are missing (or spaced unevenly); loading would stretch the volume."""


def load_series(
    info: SeriesInfo,
    *,
    on_gap: Literal["error", "interpolate"] = "error",
    on_nonuniform: Literal["error", "resample"] = "error",
    on_tilt: Literal["error", "resample"] = "resample",
    workers: int | None = None,
    progress: bool = False,
    dtype: np.dtype | type | None = None,
) -> Volume:
    """Load one series group as a Volume in real-world units (HU for CT), on the source grid.

    The geometry is SimpleITK's: ``array[k]`` is the k-th slice along the normal
    ``cross(row, col)``; origin is the first slice's ImagePositionPatient; spacing is
    ``(col spacing, row spacing, slice step)`` in mm, the slice step being the distance between the
    first and last slice over ``n - 1``.

    Args:
        info: a group from :func:`discover`.
        on_gap: missing slices: ``"error"`` raises :class:`SeriesGapError`; ``"interpolate"`` fills
            each missing slice linearly from its neighbours (logged as a warning).
        on_nonuniform: slice steps that differ by more than 1% (not whole missing slices):
            ``"error"`` raises; ``"resample"`` resamples linearly onto the median step.
        on_tilt: slices stepping off the normal (gantry tilt): ``"resample"`` (default, with a
            warning) resamples onto an orthogonal grid like dcm2niix; ``"error"`` raises.
        workers: threads reading files (default: up to 4).
        progress: show a progress bar.
        dtype: output dtype; default: the stored integer type when rescaled values fit it exactly,
            else int32 for integer rescale, else float32.

    Returns:
        The Volume; ``meta`` holds "case_id", "series_uid", "series_number", "series_description",
        "modality", "source" (folder), "orientation", "files", "skipped" (file: reason).

    Raises:
        SeriesGapError: missing slices / non-uniform spacing not allowed by the options.
        ValueError: a slice cannot be decoded (the message names the file).
    """
    n = len(info.slices)
    if n == 0:
        raise ValueError(f"{info.folder}: series {info.series_uid} has no slices")
    if info.modality.upper() != "CT":
        warnings.warn(
            f"{info.folder}: series {info.series_number} has modality {info.modality}, not CT; "
            "values are not HU and thresholds tuned for CT may not apply",
            stacklevel=2,
        )
    if info.photometric not in ("MONOCHROME1", "MONOCHROME2"):
        raise ValueError(f"{info.folder}: photometric interpretation {info.photometric} is not supported")
    if info.sheared and on_tilt == "error":
        raise SeriesGapError(f"{info.folder}: series {info.label} has gantry tilt (slices step off the normal)")

    steps = info.slice_steps_mm
    missing = info.missing_slices
    if missing and on_gap != "interpolate":
        raise SeriesGapError(
            f"{info.folder}: series {info.label} misses {missing} slice(s) "
            f"(slice steps {steps.min():.4g}..{steps.max():.4g} mm); refusing to stretch the volume. "
            f"{_bad_note(info.bad_files)}{GAP_HINT}"
        )
    ref_step = _regular_step(steps) if steps.size else 0.0
    if steps.size and not missing and not info.spacing_uniform and on_nonuniform != "resample":
        raise SeriesGapError(
            f"{info.folder}: series {info.label} has non-uniform slice spacing "
            f"({steps.min():.4g}..{steps.max():.4g} mm); pass on_nonuniform='resample' to resample onto "
            f"{ref_step:.4g} mm"
        )

    stored_dtype = _stored_dtype(info)
    need = n * info.rows * info.columns * stored_dtype.itemsize
    if need > MAX_SERIES_BYTES:
        raise ValueError(f"{info.folder}: series {info.label} claims {info.columns}x{info.rows}x{n} voxels "
                         f"({need / 2**30:.1f} GiB), beyond the {MAX_SERIES_BYTES // 2**30} GiB limit")
    stored = np.empty((n, info.rows, info.columns), dtype=stored_dtype)

    _read_slices(info, stored, on_gap=on_gap, workers=workers, progress=progress)

    if info.photometric == "MONOCHROME1":
        # invert to MONOCHROME2 (dense = high) the way GDCM / SimpleITK do, independent of the data
        if info.pixel_representation:
            np.invert(stored, out=stored)
        else:
            np.subtract((1 << info.bits_stored) - 1, stored, out=stored, casting="unsafe")
        log.warning("%s: MONOCHROME1 series %s inverted to MONOCHROME2", info.folder, info.label)

    array = _rescale(stored, info, dtype)
    del stored

    positions = np.array([s.position_mm for s in info.slices])
    origin = positions[0]
    direction = info.direction
    if n > 1:
        along = float(np.dot(positions[-1] - positions[0], info.normal))
        spacing_k = along / (n - 1)
    else:
        spacing_k = _float(info.extra.get("SliceThickness"), 1.0)
    spacing = (info.pixel_spacing_mm[1], info.pixel_spacing_mm[0], spacing_k if spacing_k > 0 else 1.0)

    meta = {
        "case_id": info.case_id,
        "series_uid": info.series_uid,
        "series_number": info.series_number,
        "series_description": info.series_description,
        "modality": info.modality,
        "source": str(info.folder),
        "orientation": info.orientation,
        "files": n,
        "skipped": {str(s.path): s.reason for s in info.skipped},
    }
    if info.sheared:
        return _untilt(array, info, positions, spacing, meta)
    vol = Volume(array, spacing, tuple(origin), direction, meta)
    if n > 2 and (missing or not info.spacing_uniform):
        vol = _regularise(vol, info.slice_positions_mm, ref_step, filled=bool(missing))
    return vol


def _read_slices(info: "SeriesInfo", stored: np.ndarray, *, on_gap: str, workers: int | None,
                 progress: bool) -> None:
    """Read every slice into ``stored`` (threads); unreadable ones refuse the series naming each
    file and its reason, or are interpolated from their neighbours with ``on_gap="interpolate"``."""
    n = len(info.slices)
    unused_bits = info.bits_allocated - info.bits_stored if 0 < info.bits_stored < info.bits_allocated else 0

    def work(k: int) -> None:
        h = info.slices[k]
        if h.pixel_offset is not None:
            _read_raw(h, stored[k])
        else:
            _decode(h, stored[k])
        if unused_bits:
            # bits above BitsStored (overlays, padding) are not part of the value, as GDCM reads it
            sl = stored[k]
            if info.pixel_representation:
                np.left_shift(sl, unused_bits, out=sl)
                np.right_shift(sl, unused_bits, out=sl)
            else:
                np.bitwise_and(sl, (1 << info.bits_stored) - 1, out=sl)

    n_workers = workers or min(4, os.cpu_count() or 1)
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=n, desc=f"loading {info.label}", unit="slice")
    failed: dict[int, str] = {}

    def safe_work(k: int) -> None:
        try:
            work(k)
        except (ValueError, OSError) as exc:
            msg, prefix = str(exc), f"{info.slices[k].path}: "
            failed[k] = msg[len(prefix):] if msg.startswith(prefix) else msg

    with ThreadPoolExecutor(max_workers=n_workers) as pool:
        for _ in pool.map(safe_work, range(n)):
            if bar is not None:
                bar.update()
    if bar is not None:
        bar.close()
    if failed:
        bad = [SkippedFile(info.slices[k].path, failed[k]) for k in sorted(failed)]
        if on_gap != "interpolate" or len(failed) == n:
            raise SeriesGapError(
                f"{info.folder}: series {info.label}: {len(failed)} of {n} slice(s) cannot be read. "
                f"{_bad_note(bad)}{GAP_HINT}"
            )
        _fill_slices(stored, sorted(failed), info.slice_positions_mm)
        log.warning("%s: filled %d unreadable slice(s) of %s by interpolation: %s", info.folder,
                    len(failed), info.label, "; ".join(str(b) for b in bad))


def _bad_note(bad: Sequence[SkippedFile]) -> str:
    if not bad:
        return ""
    shown = "; ".join(str(b) for b in bad[:3]) + (f" (and {len(bad) - 3} more)" if len(bad) > 3 else "")
    return f"Unusable file(s): {shown}. "


def _fill_slices(stored: np.ndarray, bad: Sequence[int], positions: np.ndarray) -> None:
    """Replace slices ``bad`` by linear interpolation between the nearest good slices along k."""
    good = np.setdiff1d(np.arange(stored.shape[0]), bad)
    for k in bad:
        hi = good[good > k]
        lo = good[good < k]
        if not lo.size or not hi.size:
            stored[k] = stored[(hi if hi.size else lo)[0 if hi.size else -1]]
            continue
        a, b = int(lo[-1]), int(hi[0])
        w = (positions[k] - positions[a]) / (positions[b] - positions[a])
        v = (1 - w) * stored[a].astype(np.float64) + w * stored[b].astype(np.float64)
        stored[k] = np.rint(v) if stored.dtype.kind in "iu" else v


def _rescale(stored: np.ndarray, info: SeriesInfo, dtype: Any) -> np.ndarray:
    """Apply RescaleSlope/Intercept (per slice), in place when the result fits the stored array.

    Peak memory stays at stored + output (<= 1.5x an int32 output for 16-bit data), never a
    full-size float64 temporary.
    """
    slopes = np.array([s.slope for s in info.slices])
    inters = np.array([s.intercept for s in info.slices])
    same = bool(np.all(slopes == slopes[0]) and np.all(inters == inters[0]))
    integral = bool(np.all(slopes == np.round(slopes)) and np.all(inters == np.round(inters)))
    lo_s, hi_s = (int(stored.min()), int(stored.max())) if stored.size else (0, 0)
    if dtype is None:
        if integral:
            vals = np.concatenate([lo_s * slopes + inters, hi_s * slopes + inters])
            lo, hi = float(vals.min()), float(vals.max())
            dtype = next((c for c in (np.int16, np.int32) if np.iinfo(c).min <= lo and hi <= np.iinfo(c).max),
                         np.float32)
        else:
            dtype = np.float32
    dtype = np.dtype(dtype)
    if stored.dtype == np.uint16 and dtype == np.int16 and hi_s < 32768:
        stored = stored.view(np.int16)  # same bits for values below 2**15
    if same and integral and stored.dtype == dtype:
        if slopes[0] != 1:
            stored *= dtype.type(slopes[0])
        if inters[0] != 0:
            stored += dtype.type(inters[0])
        return stored
    out = np.empty(stored.shape, dtype=dtype)
    for k in range(stored.shape[0]):  # slice by slice: no full-size temporaries
        if integral:
            v = stored[k].astype(np.int64) * int(slopes[k]) + int(inters[k])
        else:
            v = stored[k].astype(np.float64) * slopes[k] + inters[k]
            if dtype.kind in "iu":
                v = np.rint(v)
        out[k] = v
    return out


def _regularise(vol: Volume, positions: np.ndarray, step: float, *, filled: bool) -> Volume:
    """Linear interpolation along k onto a uniform step (gap filling / non-uniform spacing)."""
    rel = positions - positions[0]
    n_new = int(round(rel[-1] / step)) + 1
    targets = np.arange(n_new) * step
    src = vol.array
    out_dtype = np.float32 if src.dtype.kind == "f" else src.dtype
    out = np.empty((n_new,) + src.shape[1:], dtype=out_dtype)
    for t_idx, t in enumerate(targets):
        hi = int(np.searchsorted(rel, t - 1e-6))
        hi = min(max(hi, 0), len(rel) - 1)
        if abs(rel[hi] - t) <= 1e-3 or hi == 0:
            out[t_idx] = src[hi]
            continue
        lo = hi - 1
        w = (t - rel[lo]) / (rel[hi] - rel[lo])
        v = (1 - w) * src[lo].astype(np.float32) + w * src[hi].astype(np.float32)
        out[t_idx] = np.rint(v) if out_dtype.kind in "iu" else v
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
