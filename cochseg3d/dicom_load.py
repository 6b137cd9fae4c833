"""DICOM pixel loading: one discovered series group to an oriented :class:`~cochseg3d.volume.Volume`.

Slices are read straight from the file (uncompressed little endian), inflated (deflated) or decoded by pydicom; one
slice that cannot be read refuses the series by default, naming the file and the reason, unless
the caller asks to interpolate it. Gaps, non-uniform steps and gantry tilt are handled here too.
"""

from __future__ import annotations

import logging
import os
import warnings
import zlib
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from pydicom.uid import DeflatedExplicitVRLittleEndian

from cochseg3d.dicom_header import SkippedFile, _float
from cochseg3d.dicom_resample import _fill_slices, _regularise, _untilt  # noqa: F401  (re-exported)
from cochseg3d.volume import Volume

if TYPE_CHECKING:
    from cochseg3d.dicom_series import SeriesInfo, SliceHeader

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


def _read_deflated(header: SliceHeader, out: np.ndarray) -> None:
    """Inflate one slice's pixel bytes into ``out`` (only they are kept; the stream before them is counted)."""
    from cochseg3d.dicom_deflate import inflated

    stop = header.pixel_offset + out.nbytes  # type: ignore[operator]
    try:
        data, n = inflated(header.path, stop, start=header.pixel_offset)  # type: ignore[arg-type]
    except zlib.error as exc:
        raise ValueError(f"{header.path}: unreadable deflated data ({exc})") from None
    if n < stop:
        raise ValueError(f"{header.path}: truncated pixel data ({len(data)} of {out.nbytes} bytes)")
    out.reshape(-1).view(np.uint8)[:] = np.frombuffer(data, np.uint8)


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
    _check_loadable(info, on_tilt)
    ref_step = _check_spacing(info, on_gap, on_nonuniform)
    stored = _allocate(info)
    _read_slices(info, stored, on_gap=on_gap, workers=workers, progress=progress)
    _to_monochrome2(stored, info)
    array = _rescale(stored, info, dtype)
    del stored
    return _build_volume(array, info, ref_step)


def _check_loadable(info: SeriesInfo, on_tilt: str) -> None:
    """Refuse a series that cannot be loaded as it is; warn when its values are not HU."""
    if len(info.slices) == 0:
        raise ValueError(f"{info.folder}: series {info.series_uid} has no slices")
    if info.modality.upper() != "CT":
        warnings.warn(
            f"{info.folder}: series {info.series_number} has modality {info.modality}, not CT; "
            "values are not HU and thresholds tuned for CT may not apply",
            stacklevel=3,  # load_series' caller, as before this check moved out of it
        )
    if info.photometric not in ("MONOCHROME1", "MONOCHROME2"):
        raise ValueError(f"{info.folder}: photometric interpretation {info.photometric} is not supported")
    if info.sheared and on_tilt == "error":
        raise SeriesGapError(f"{info.folder}: series {info.label} has gantry tilt (slices step off the normal)")


def _check_spacing(info: SeriesInfo, on_gap: str, on_nonuniform: str) -> float:
    """Refuse missing slices / non-uniform steps the options do not allow; the regular step (mm)."""
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
    return ref_step


def _allocate(info: SeriesInfo) -> np.ndarray:
    """The empty stored-pixel array (k, j, i), refused before allocation beyond MAX_SERIES_BYTES."""
    n = len(info.slices)
    stored_dtype = _stored_dtype(info)
    need = n * info.rows * info.columns * stored_dtype.itemsize
    if need > MAX_SERIES_BYTES:
        raise ValueError(f"{info.folder}: series {info.label} claims {info.columns}x{info.rows}x{n} voxels "
                         f"({need / 2**30:.1f} GiB), beyond the {MAX_SERIES_BYTES // 2**30} GiB limit")
    return np.empty((n, info.rows, info.columns), dtype=stored_dtype)


def _to_monochrome2(stored: np.ndarray, info: SeriesInfo) -> None:
    """Invert a MONOCHROME1 series in place to MONOCHROME2 (dense = high) the way GDCM / SimpleITK
    do, independent of the data."""
    if info.photometric != "MONOCHROME1":
        return
    if info.pixel_representation:
        np.invert(stored, out=stored)
    else:
        np.subtract((1 << info.bits_stored) - 1, stored, out=stored, casting="unsafe")
    log.warning("%s: MONOCHROME1 series %s inverted to MONOCHROME2", info.folder, info.label)


def _slice_spacing(info: SeriesInfo, positions: np.ndarray) -> tuple[float, float, float]:
    """(col spacing, row spacing, slice step) in mm; the step is first-to-last distance over n - 1."""
    n = len(positions)
    if n > 1:
        along = float(np.dot(positions[-1] - positions[0], info.normal))
        spacing_k = along / (n - 1)
    else:
        spacing_k = _float(info.extra.get("SliceThickness"), 1.0)
    return (info.pixel_spacing_mm[1], info.pixel_spacing_mm[0], spacing_k if spacing_k > 0 else 1.0)


def _series_meta(info: SeriesInfo) -> dict[str, Any]:
    return {
        "case_id": info.case_id,
        "series_uid": info.series_uid,
        "series_number": info.series_number,
        "series_description": info.series_description,
        "modality": info.modality,
        "source": str(info.folder),
        "orientation": info.orientation,
        "files": len(info.slices),
        "skipped": {str(s.path): s.reason for s in info.skipped},
    }


def _build_volume(array: np.ndarray, info: SeriesInfo, ref_step: float) -> Volume:
    """The Volume on the source grid; tilted stacks onto an orthogonal grid, gaps / uneven steps
    onto a uniform step."""
    positions = np.array([s.position_mm for s in info.slices])
    spacing = _slice_spacing(info, positions)
    meta = _series_meta(info)
    if info.sheared:
        return _untilt(array, info, positions, spacing, meta)
    vol = Volume(array, spacing, tuple(positions[0]), info.direction, meta)
    missing = info.missing_slices
    if len(info.slices) > 2 and (missing or not info.spacing_uniform):
        vol = _regularise(vol, info.slice_positions_mm, ref_step, filled=bool(missing))
    return vol


def _read_slices(info: "SeriesInfo", stored: np.ndarray, *, on_gap: str, workers: int | None,
                 progress: bool) -> None:
    """Read every slice into ``stored`` (threads); unreadable ones refuse the series naming each
    file and its reason, or are interpolated from their neighbours with ``on_gap="interpolate"``."""
    failed = _read_all(info, stored, workers=workers, progress=progress)
    if not failed:
        return
    n = len(info.slices)
    bad = [SkippedFile(info.slices[k].path, failed[k]) for k in sorted(failed)]
    if on_gap != "interpolate" or len(failed) == n:
        raise SeriesGapError(
            f"{info.folder}: series {info.label}: {len(failed)} of {n} slice(s) cannot be read. "
            f"{_bad_note(bad)}{GAP_HINT}"
        )
    _fill_slices(stored, sorted(failed), info.slice_positions_mm)
    log.warning("%s: filled %d unreadable slice(s) of %s by interpolation: %s", info.folder,
                len(failed), info.label, "; ".join(str(b) for b in bad))


def _read_all(info: "SeriesInfo", stored: np.ndarray, *, workers: int | None, progress: bool) -> dict[int, str]:
    """Read the slices on a thread pool; {slice index: why it cannot be read} for those that fail."""
    n = len(info.slices)
    n_workers = workers or min(4, os.cpu_count() or 1)
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=n, desc=f"loading {info.label}", unit="slice")
    failed: dict[int, str] = {}

    def safe_work(k: int) -> None:
        try:
            _read_slice(info, k, stored[k])
        except (ValueError, OSError) as exc:
            msg, prefix = str(exc), f"{info.slices[k].path}: "
            failed[k] = msg[len(prefix):] if msg.startswith(prefix) else msg

    with ThreadPoolExecutor(max_workers=n_workers) as pool:
        for _ in pool.map(safe_work, range(n)):
            if bar is not None:
                bar.update()
    if bar is not None:
        bar.close()
    return failed


def _read_slice(info: "SeriesInfo", k: int, sl: np.ndarray) -> None:
    """Read slice ``k`` into ``sl``, keeping only its BitsStored bits."""
    h = info.slices[k]
    if h.pixel_offset is not None and h.transfer_syntax == DeflatedExplicitVRLittleEndian:
        _read_deflated(h, sl)
    elif h.pixel_offset is not None:
        _read_raw(h, sl)
    else:
        _decode(h, sl)
    unused_bits = info.bits_allocated - info.bits_stored if 0 < info.bits_stored < info.bits_allocated else 0
    if unused_bits:
        # bits above BitsStored (overlays, padding) are not part of the value, as GDCM reads it
        if info.pixel_representation:
            np.left_shift(sl, unused_bits, out=sl)
            np.right_shift(sl, unused_bits, out=sl)
        else:
            np.bitwise_and(sl, (1 << info.bits_stored) - 1, out=sl)


def _bad_note(bad: Sequence[SkippedFile]) -> str:
    if not bad:
        return ""
    shown = "; ".join(str(b) for b in bad[:3]) + (f" (and {len(bad) - 3} more)" if len(bad) > 3 else "")
    return f"Unusable file(s): {shown}. "


def _rescaled_dtype(lo_s: int, hi_s: int, slopes: np.ndarray, inters: np.ndarray, *, integral: bool) -> Any:
    """The default output type: int16 / int32 when an integer rescale of the stored range fits it, else float32."""
    if not integral:
        return np.float32
    vals = np.concatenate([lo_s * slopes + inters, hi_s * slopes + inters])
    lo, hi = float(vals.min()), float(vals.max())
    return next((c for c in (np.int16, np.int32) if np.iinfo(c).min <= lo and hi <= np.iinfo(c).max), np.float32)


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
        dtype = _rescaled_dtype(lo_s, hi_s, slopes, inters, integral=integral)
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


