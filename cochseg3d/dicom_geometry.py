"""Per-frame geometry of a DICOM header: ImageOrientationPatient as two perpendicular unit
vectors (normalised within a tolerance, refused beyond it), the functional groups of enhanced
multi-frame images, and the checks each frame's position, spacing and rescale must pass.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pydicom

from cochseg3d.dicom_rawheader import _FastHeader, _float, _float_list, _int_or_none

#: orientation cosines closer than this are the same orientation
_IOP_TOL = 1e-3
#: ImageOrientationPatient vectors this close to unit length / perpendicular are corrected (rounding
#: of the decimal strings); beyond it the header is refused rather than guessed
IOP_NORM_TOL = 0.01
IOP_DOT_TOL = 0.01

#: one frame: (ImagePositionPatient, ImageOrientationPatient, PixelSpacing, slope, intercept)
Frame = tuple[np.ndarray, np.ndarray, np.ndarray, float, float]


def check_orientation(iop: np.ndarray) -> tuple[np.ndarray | None, str | None]:
    """(ImageOrientationPatient as two perpendicular unit vectors, None) or (None, reason).

    Vectors within :data:`IOP_NORM_TOL` of unit length and :data:`IOP_DOT_TOL` of perpendicular
    are normalised and orthogonalised (a file already exact is returned unchanged); a zero,
    non-unit or skewed orientation is refused: spacing and direction would both be wrong.
    """
    row, col = iop[:3].astype(float), iop[3:].astype(float)
    nr, nc = float(np.linalg.norm(row)), float(np.linalg.norm(col))
    if nr < 1e-6 or nc < 1e-6:
        return None, f"ImageOrientationPatient {_fmt_iop(iop)} has a zero vector: no orientation"
    if abs(nr - 1) > IOP_NORM_TOL or abs(nc - 1) > IOP_NORM_TOL:
        return None, (f"ImageOrientationPatient vectors have lengths {nr:.4g} and {nc:.4g}, not 1 "
                      f"(tolerance {IOP_NORM_TOL}): refusing to guess the geometry")
    dot = float(np.dot(row, col)) / (nr * nc)
    if abs(dot) > IOP_DOT_TOL:
        return None, "ImageOrientationPatient row and column directions are not perpendicular"
    if abs(nr - 1) < 1e-9 and abs(nc - 1) < 1e-9 and abs(dot) < 1e-9:
        return iop, None
    row = row / nr
    col = col / nc
    col = col - np.dot(row, col) * row
    return np.concatenate([row, col / np.linalg.norm(col)]), None


def _fmt_iop(iop: np.ndarray) -> str:
    return "[" + ", ".join(f"{v:.4g}" for v in iop) + "]"


def _frame_values(ds: pydicom.Dataset | _FastHeader) -> list[tuple[Any, Any, Any, float, float]]:
    """The raw (IPP, IOP, PixelSpacing, slope, intercept) of every frame, single- or multi-frame.

    Raises:
        ValueError: the per-frame groups do not match NumberOfFrames.
    """
    if (_int_or_none(ds.get("NumberOfFrames")) or 1) > 1:
        return _frame_geometry(ds)
    return [(ds.get("ImagePositionPatient"), ds.get("ImageOrientationPatient"), ds.get("PixelSpacing"),
             _float(ds.get("RescaleSlope"), 1.0), _float(ds.get("RescaleIntercept"), 0.0))]


def _frame_geometry(ds: pydicom.Dataset | _FastHeader) -> list[tuple[Any, Any, Any, float, float]]:
    """Per frame of an enhanced multi-frame image: (IPP, IOP, PixelSpacing, slope, intercept).

    Each value is looked up in the frame's functional groups, then the shared ones, then the top
    level, as the standard's functional-group macros allow.

    Raises:
        ValueError: the per-frame groups do not match NumberOfFrames.
    """
    n = _int_or_none(ds.get("NumberOfFrames")) or 1
    shared_seq = ds.get("SharedFunctionalGroupsSequence") or []
    shared = shared_seq[0] if len(shared_seq) else None
    per = ds.get("PerFrameFunctionalGroupsSequence") or []
    if len(per) != n:
        raise ValueError(f"multi-frame image with {len(per)} per-frame groups for {n} frames")

    def pick(i: int, seq_kw: str, kw: str) -> Any:
        for group in (per[i], shared):
            if group is not None and seq_kw in group and len(group[seq_kw].value):
                value = group[seq_kw].value[0].get(kw)
                if value not in (None, ""):
                    return value
        return ds.get(kw)

    return [
        (
            pick(i, "PlanePositionSequence", "ImagePositionPatient"),
            pick(i, "PlaneOrientationSequence", "ImageOrientationPatient"),
            pick(i, "PixelMeasuresSequence", "PixelSpacing"),
            _float(pick(i, "PixelValueTransformationSequence", "RescaleSlope"), 1.0),
            _float(pick(i, "PixelValueTransformationSequence", "RescaleIntercept"), 0.0),
        )
        for i in range(n)
    ]


def _check_frame(ipp_v: Any, iop_v: Any, ps_v: Any, slope: float, intercept: float) -> tuple[Frame | None, str | None]:
    """(the frame's validated geometry, None) or (None, the reason it is unusable)."""
    iop, ipp, ps = _float_list(iop_v, 6), _float_list(ipp_v, 3), _float_list(ps_v, 2)
    if iop is None or ipp is None or ps is None:
        return None, "invalid ImagePositionPatient/ImageOrientationPatient/PixelSpacing"
    if np.any(ps <= 0) or np.any(ps > 100):
        return None, f"PixelSpacing {ps.tolist()} mm is not a scan's (must be > 0 and <= 100 mm)"
    if not (np.isfinite(slope) and np.isfinite(intercept)) or slope == 0:
        return None, f"RescaleSlope {slope} / RescaleIntercept {intercept} are unusable"
    iop, reason = check_orientation(iop)
    if reason is not None:
        return None, reason
    return (ipp, iop, ps, slope, intercept), None
