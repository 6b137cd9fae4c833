"""DICOM headers: which files may be opened, and whether a header describes a usable slice.

Every check here runs before any pixel is allocated: the file is a regular file (``os.stat``, so a
named pipe or a device is never opened), the header parses (with or without the 128-byte preamble),
the image size is sane and the pixel data present in the file can hold it (for compressed syntaxes
too), and ImageOrientationPatient is two perpendicular unit vectors (normalised within a tolerance,
refused beyond it). Each refusal is a :class:`SkippedFile` with the reason shown to the user.
PatientName is never read.

The byte-level reading lives in :mod:`dicom_rawheader`, the size / pixel-data / image-kind checks
in :mod:`dicom_checks`, orientation and frame geometry in :mod:`dicom_geometry`; their names stay
importable from here.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from pydicom.errors import InvalidDicomError

from cochseg3d.dicom_checks import (  # noqa: F401  (re-exported)
    MAX_FRAMES,
    MAX_IMAGE_SIDE,
    _MAX_RATIO,
    _MAX_RATIO_OTHER,
    _RAW_SYNTAXES,
    _SECONDARY_CAPTURE,
    _deflated_check,
    _pixel_data_check,
    _size_reason,
    _skip_reason,
    is_deflated,
)
from cochseg3d.dicom_geometry import (  # noqa: F401  (re-exported)
    IOP_DOT_TOL,
    IOP_NORM_TOL,
    _IOP_TOL,
    _check_frame,
    _fmt_iop,
    _frame_geometry,
    _frame_values,
    check_orientation,
)
from cochseg3d.dicom_rawheader import (  # noqa: F401  (re-exported)
    HEADER_TAGS,
    NotRegularFileError,
    _FAST_TAG,
    _FAST_VR,
    _HEADER_TAG_NUMBERS,
    _PIXEL_DATA_TAG,
    _PIXEL_DATA_TAG_BE,
    _RAW_FIRST_GROUPS,
    _FastHeader,
    _float,
    _float_list,
    _int_or_none,
    _iter_files,
    _looks_like_raw_dicom,
    _open_regular,
    _read_header,
    _transfer_syntax,
    is_dicom_file,
)
from cochseg3d.utils import display_path, not_regular_reason
from cochseg3d.volume import is_temporary


@dataclass(frozen=True)
class SkippedFile:
    """A file left out, and why (shown to the user; never contains PatientName)."""

    path: Path
    reason: str

    def __str__(self) -> str:
        return f"{display_path(self.path)}: {self.reason}"


# --- one file, all checks -------------------------------------------------------------------------
@dataclass
class FileHeader:
    """A file's header and validated per-frame geometry, or the reason it is no usable slice."""

    path: Path
    ds: _FastHeader | None
    reason: str | None = None
    #: byte offset of uncompressed little-endian pixel data (None: decode with pydicom)
    offset: int | None = None
    #: per frame: (ImagePositionPatient, ImageOrientationPatient (unit, perpendicular),
    #: PixelSpacing, RescaleSlope, RescaleIntercept)
    frames: list[tuple[np.ndarray, np.ndarray, np.ndarray, float, float]] = field(default_factory=list)
    frame_bytes: int = 0

    @property
    def series_uid(self) -> str:
        return str(self.ds.get("SeriesInstanceUID", "")) if self.ds is not None else ""

    @property
    def unreadable_slice(self) -> bool:
        """A slice of a series that cannot be read (truncated ...), not a file of another kind."""
        return bool(self.reason and self.series_uid and self.reason.startswith(("truncated", "unreadable pixel")))


def _path_reason(path: Path) -> str | None:
    """Why the file is left out before it is opened: its name or its kind (None if it may be read)."""
    if path.name.startswith("._"):
        return "macOS resource-fork file ('._' prefix)"
    if is_temporary(path):
        return "unfinished temporary of an interrupted write (not a result)"
    if path.name.upper() == "DICOMDIR":
        return "DICOMDIR (a directory index; the image files are read directly)"
    return not_regular_reason(path)


def read_file_header(path: Path) -> FileHeader:
    """Every header check of one file, in order; nothing beyond the header is read or allocated."""
    reason = _path_reason(path)
    if reason is not None:
        return FileHeader(path, None, reason)
    try:
        raw, pos, size, head = _read_header(path)
    except InvalidDicomError:
        return FileHeader(path, None, "not a DICOM file")
    except Exception as exc:  # pydicom raises many types on corrupt headers
        return FileHeader(path, None, f"unreadable DICOM header ({type(exc).__name__}: {exc})")
    ds = _FastHeader(raw)
    out = FileHeader(path, ds, _skip_reason(ds))
    if out.reason is None and is_deflated(ds):
        out.offset, out.reason = _deflated_check(ds, path, size, pos)  # an offset into the inflated stream
    elif out.reason is None and pos is None:
        # an image header that runs to the end of the file: cut short before its pixels
        out.reason = "truncated: the file ends before its pixel data" if not head else "no pixel data"
    elif out.reason is None:
        try:
            out.offset, out.reason = _pixel_data_check(ds, pos, head, size)
        except (OSError, struct.error, ValueError, TypeError) as exc:
            out.reason = f"unreadable pixel data header ({exc})"
    if out.reason is None:
        out.reason = _read_frames(out)
    if out.reason is None and not out.series_uid:
        out.reason = "no SeriesInstanceUID"
    return out


def _read_frames(h: FileHeader) -> str | None:
    """Fill ``h.frames`` with validated geometry; the reason it cannot be, or None."""
    ds = h.ds
    try:
        frames = _frame_values(ds)
    except (ValueError, TypeError, AttributeError, KeyError) as exc:
        return f"unreadable multi-frame geometry ({exc})"
    h.frame_bytes = int(ds.Rows) * int(ds.Columns) * (int(ds.get("BitsAllocated", 16) or 16) // 8)
    for values in frames:
        frame, reason = _check_frame(*values)
        if reason is not None:
            return reason
        h.frames.append(frame)
    return None
