"""DICOM headers: which files may be opened, and whether a header describes a usable slice.

Every check here runs before any pixel is allocated: the file is a regular file (``os.stat``, so a
named pipe or a device is never opened), the header parses (with or without the 128-byte preamble),
the image size is sane and the pixel data present in the file can hold it (for compressed syntaxes
too), and ImageOrientationPatient is two perpendicular unit vectors (normalised within a tolerance,
refused beyond it). Each refusal is a :class:`SkippedFile` with the reason shown to the user.
PatientName is never read.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
from pydicom.dataelem import RawDataElement
from pydicom.errors import InvalidDicomError
from pydicom.tag import Tag
from pydicom.uid import (
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    MediaStorageDirectoryStorage,
    RLELossless,
    UID,
)

from cochseg3d.utils import display_path, not_regular_reason
from cochseg3d.volume import is_temporary

#: header fields read by :func:`discover` (PatientName is deliberately absent)
HEADER_TAGS = [
    "SOPClassUID", "SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID", "FrameOfReferenceUID",
    "SeriesNumber", "SeriesDescription", "Modality", "PatientID", "ImageType", "InstanceNumber",
    "AcquisitionNumber", "ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing",
    "SliceThickness", "Rows", "Columns", "SamplesPerPixel", "PhotometricInterpretation",
    "PlanarConfiguration", "BitsAllocated", "BitsStored", "PixelRepresentation", "RescaleSlope",
    "RescaleIntercept", "NumberOfFrames", "GantryDetectorTilt", "Manufacturer",
    "SharedFunctionalGroupsSequence", "PerFrameFunctionalGroupsSequence",
    "ManufacturerModelName", "StudyDate", "BodyPartExamined", "ConvolutionKernel", "KVP",
]
_HEADER_TAG_NUMBERS = [Tag(k) for k in HEADER_TAGS]  # pydicom matches Tag objects faster than keywords
_SECONDARY_CAPTURE = {
    "1.2.840.10008.5.1.4.1.1.7", "1.2.840.10008.5.1.4.1.1.7.1", "1.2.840.10008.5.1.4.1.1.7.2",
    "1.2.840.10008.5.1.4.1.1.7.3", "1.2.840.10008.5.1.4.1.1.7.4",
}
_RAW_SYNTAXES = {ExplicitVRLittleEndian: 12, ImplicitVRLittleEndian: 8}
_PIXEL_DATA_TAG = struct.pack("<HH", 0x7FE0, 0x0010)
_PIXEL_DATA_TAG_BE = struct.pack(">HH", 0x7FE0, 0x0010)
#: orientation cosines closer than this are the same orientation
_IOP_TOL = 1e-3


@dataclass(frozen=True)
class SkippedFile:
    """A file left out, and why (shown to the user; never contains PatientName)."""

    path: Path
    reason: str

    def __str__(self) -> str:
        return f"{display_path(self.path)}: {self.reason}"



# --- which files may be opened --------------------------------------------------------------------
class NotRegularFileError(OSError):
    """The path is a pipe, device, socket or folder: opening it could block, so it is never opened."""


def _open_regular(path: str | os.PathLike):
    """``open(path, "rb")`` for regular files only (a FIFO would block the caller forever)."""
    reason = not_regular_reason(path)
    if reason is not None and reason != "empty file":
        raise NotRegularFileError(f"{display_path(path)}: {reason}")
    return open(path, "rb")


# --- header reading -------------------------------------------------------------------------------
#: first tags of a dataset written without the 128-byte preamble: file meta (0002) or identifying (0008)
_RAW_FIRST_GROUPS = {struct.pack("<H", g) for g in (0x0002, 0x0008)} | {struct.pack(">H", 0x0008)}


def _looks_like_raw_dicom(path: Path) -> bool:
    """A file without the 128-byte preamble that still starts with a group 0x0002/0x0008 tag."""
    try:
        with _open_regular(path) as f:
            head = f.read(4)
    except OSError:
        return False
    return len(head) == 4 and head[:2] in _RAW_FIRST_GROUPS


def is_dicom_file(path: str | os.PathLike) -> bool:
    """The one rule for "is this a DICOM file" (used by inspect, convert and segment's discovery):
    a regular file that is DICOM Part 10 (preamble + ``DICM``), or a preamble-less dataset that
    pydicom reads with ``force=True`` and that names its SOP class. Pipes and devices are never opened."""
    path = Path(path)
    if not_regular_reason(path) is not None:
        return False
    try:
        ds = _read_header(path)[0]
    except Exception:  # anything unreadable as DICOM is not DICOM
        return False
    # force=True reads almost anything: a preamble-less dataset must at least name its SOP class
    return bool(getattr(ds, "preamble", None)) or bool(ds.get("SOPClassUID"))


def _float_list(value: Any, n: int) -> np.ndarray | None:
    try:
        a = np.array([float(v) for v in value], dtype=float)
    except (TypeError, ValueError):
        return None
    return a if a.shape == (n,) and np.all(np.isfinite(a)) else None


def _float(value: Any, default: float) -> float:
    try:
        return float(value) if value not in (None, "") else default
    except (TypeError, ValueError):
        return default


def _int_or_none(value: Any) -> int | None:
    try:
        return int(value) if value not in (None, "") else None
    except (TypeError, ValueError):
        return None


def _read_header(path: Path) -> tuple[pydicom.Dataset, int | None, int, bytes]:
    """Header (no pixel data), the file offset of the Pixel Data element (None if absent), the
    file size and the element's first 12 bytes (tag, VR, length).

    Raises:
        NotRegularFileError: ``path`` is a pipe, device ... (checked before opening).
        InvalidDicomError: neither Part 10 nor a preamble-less dataset.
    """
    with _open_regular(path) as f:
        size = os.fstat(f.fileno()).st_size
        try:
            ds = pydicom.dcmread(f, stop_before_pixels=True, specific_tags=_HEADER_TAG_NUMBERS)
        except InvalidDicomError:
            if not _looks_like_raw_dicom(path):
                raise
            f.seek(0)
            ds = pydicom.dcmread(f, stop_before_pixels=True, specific_tags=_HEADER_TAG_NUMBERS, force=True)
        pos = f.tell()
        head = f.read(12)
    # the Pixel Data tag in the dataset's own byte order (big-endian files store it as 7FE0 0010 >)
    little = getattr(ds, "original_encoding", (None, True))[1] is not False
    tag = _PIXEL_DATA_TAG if little else _PIXEL_DATA_TAG_BE
    return ds, (pos if head[:4] == tag else None), size, head


def _transfer_syntax(ds: pydicom.Dataset | _FastHeader) -> str:
    """The file's transfer syntax; for a raw dataset without file meta, the encoding pydicom found."""
    base = ds.ds if isinstance(ds, _FastHeader) else ds
    meta = getattr(base, "file_meta", None)
    ts = str(meta.get("TransferSyntaxUID", "") or "") if meta is not None else ""
    if ts:
        return ts
    implicit, little = getattr(base, "original_encoding", (True, True))
    if implicit is not False:
        return ImplicitVRLittleEndian
    return ExplicitVRLittleEndian if little is not False else ExplicitVRBigEndian


# --- image size: checked against the bytes present before anything is allocated -----------------
#: largest accepted image side (clinical CBCT is <= 1024; 2048 for micro-CT); beyond is a broken header
MAX_IMAGE_SIDE = 8192
#: largest accepted frame count of one multi-frame file
MAX_FRAMES = 8192
#: the best compression ratio a real file can have: PackBits RLE stores at most 128 bytes in 2, and
#: JPEG / JPEG 2000 images of a scanner never come near 1000:1
_MAX_RATIO = {RLELossless: 64}
_MAX_RATIO_OTHER = 1000


def _size_reason(ds: pydicom.Dataset | _FastHeader) -> str | None:
    """Why the header's image size is unusable (None if sane): zero, absurd or unsupported."""
    rows, cols = _int_or_none(ds.get("Rows")), _int_or_none(ds.get("Columns"))
    frames = _int_or_none(ds.get("NumberOfFrames")) or 1
    bits = _int_or_none(ds.get("BitsAllocated")) or 16
    stored = _int_or_none(ds.get("BitsStored")) or bits
    if not rows or not cols or rows < 0 or cols < 0:
        return f"Rows = {rows}, Columns = {cols}: no image"
    if rows > MAX_IMAGE_SIDE or cols > MAX_IMAGE_SIDE or frames > MAX_FRAMES or frames < 1:
        return (f"header claims {cols}x{rows} pixels in {frames} frame(s); more than {MAX_IMAGE_SIDE} pixels "
                f"a side or {MAX_FRAMES} frames is a broken header, not a scan")
    if bits not in (8, 16, 32):
        return f"BitsAllocated = {bits} is not supported (8, 16 or 32)"
    if not 0 < stored <= bits:
        return f"BitsStored = {stored} does not fit BitsAllocated = {bits}"
    if (_int_or_none(ds.get("PixelRepresentation")) or 0) not in (0, 1):
        return f"PixelRepresentation = {ds.get('PixelRepresentation')} is neither 0 nor 1"
    return None


def _pixel_data_check(
    ds: pydicom.Dataset | _FastHeader, pos: int, head: bytes, file_size: int
) -> tuple[int | None, str | None]:
    """(offset of raw pixel bytes or None, reason the file is unusable or None).

    Uncompressed: the element's length and the file must hold every pixel the header claims.
    Compressed: the bytes present must be at least the claimed size over the syntax's best
    compression ratio (an RLE file claiming 60000x60000 pixels in a few kB is refused here).
    """
    reason = _size_reason(ds)
    if reason is not None:
        return None, reason
    ts = _transfer_syntax(ds)
    frames = _int_or_none(ds.get("NumberOfFrames")) or 1
    expected = int(ds.Rows) * int(ds.Columns) * int(ds.get("SamplesPerPixel", 1) or 1) * frames * (
        int(ds.get("BitsAllocated", 16) or 16) // 8
    )
    if ts in _RAW_SYNTAXES or ts == ExplicitVRBigEndian:
        if ts == ImplicitVRLittleEndian:
            length = struct.unpack("<I", head[4:8])[0] if len(head) >= 8 else 0
            hdr = 8
        else:
            fmt = ">I" if ts == ExplicitVRBigEndian else "<I"
            length = struct.unpack(fmt, head[8:12])[0] if len(head) >= 12 else 0
            hdr = 12
        if length == 0xFFFFFFFF:
            return None, "uncompressed transfer syntax with encapsulated pixel data"
        if pos + hdr + min(length, expected) > file_size or length < expected:
            have = max(0, file_size - pos - hdr)
            return None, f"truncated: pixel data has {min(have, length)} of {expected} bytes"
        fast = ts in _RAW_SYNTAXES and int(ds.get("BitsAllocated", 16)) in (8, 16)
        return (pos + hdr if fast else None), None
    # encapsulated (compressed): a file cut short cannot hold the end of the fragments
    present = file_size - pos - 12
    if present <= 0:
        return None, "truncated: no pixel data fragments"
    ratio = _MAX_RATIO.get(ts, _MAX_RATIO_OTHER)
    if present * ratio < expected:
        return None, (f"header claims {int(ds.Columns)}x{int(ds.Rows)} pixels x {frames} frame(s) "
                      f"({expected} bytes) but the file holds {present} compressed bytes "
                      f"(more than {ratio}:1 is impossible for {UID(ts).name})")
    return None, None


# --- orientation ----------------------------------------------------------------------------------
#: ImageOrientationPatient vectors this close to unit length / perpendicular are corrected (rounding
#: of the decimal strings); beyond it the header is refused rather than guessed
IOP_NORM_TOL = 0.01
IOP_DOT_TOL = 0.01


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


def _skip_reason(ds: pydicom.Dataset | _FastHeader) -> str | None:
    """Why a readable DICOM file is no slice of an image volume (None if it is one)."""
    sop = str(ds.get("SOPClassUID", ""))
    meta_sop = str(getattr(ds, "file_meta", {}).get("MediaStorageSOPClassUID", "")) if hasattr(ds, "file_meta") else ""
    if MediaStorageDirectoryStorage in (sop, meta_sop) or "DirectoryRecordSequence" in ds:
        return "DICOMDIR (a directory index; the image files are read directly)"
    spp = _int_or_none(ds.get("SamplesPerPixel")) or 1
    photometric = str(ds.get("PhotometricInterpretation", "")).upper()
    if spp != 1 or photometric.startswith(("RGB", "YBR", "PALETTE")):
        return f"colour image ({photometric or f'{spp} samples per pixel'}), not a volume slice"
    if sop in _SECONDARY_CAPTURE:
        return "secondary capture (screenshot/report image), not a volume slice"
    image_type = [str(t).upper() for t in (ds.get("ImageType") or [])]
    if "LOCALIZER" in image_type or "SCOUT" in image_type:
        return "localizer/scout image"
    if "Rows" not in ds or "Columns" not in ds:
        return f"no image (SOP class {UID(sop).name if sop else 'unknown'})"
    if (_int_or_none(ds.get("NumberOfFrames")) or 1) > 1:
        if "PerFrameFunctionalGroupsSequence" not in ds:
            return f"multi-frame image ({ds.NumberOfFrames} frames) without per-frame geometry"
        return None  # enhanced multi-frame: geometry comes from the functional groups
    missing = [k for k in ("ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing") if k not in ds]
    if missing:
        return f"no {'/'.join(missing)}: a 2D image without patient geometry"
    return None


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


def _iter_files(folder: Path) -> Iterable[Path]:
    for root, dirs, files in os.walk(folder):
        dirs.sort()
        for name in sorted(files):
            yield Path(root) / name


#: the per-file fields parsed straight from the raw bytes (pydicom's value conversion is most of a
#: header read's cost; everything else goes through ``Dataset.get``)
_FAST_VR = {
    "SOPClassUID": "UI", "SOPInstanceUID": "UI", "SeriesInstanceUID": "UI", "Rows": "US", "Columns": "US",
    "SamplesPerPixel": "US", "BitsAllocated": "US", "BitsStored": "US", "PixelRepresentation": "US",
    "PhotometricInterpretation": "CS", "ImageType": "CSM", "ImagePositionPatient": "DSM",
    "ImageOrientationPatient": "DSM", "PixelSpacing": "DSM", "RescaleSlope": "DS", "RescaleIntercept": "DS",
    "InstanceNumber": "IS", "NumberOfFrames": "IS",
}
_FAST_TAG = {k: Tag(k) for k in _FAST_VR}


class _FastHeader:
    """Read-only view of a header Dataset with a fast path for the fields every file needs."""

    __slots__ = ("ds", "_cache", "_fast")

    def __init__(self, ds: pydicom.Dataset):
        self.ds = ds
        self._cache: dict[str, Any] = {}
        enc = getattr(ds, "original_encoding", (None, True))
        self._fast = enc[1] is not False  # big endian: let pydicom convert

    @property
    def file_meta(self):
        return self.ds.file_meta

    def __contains__(self, keyword: str) -> bool:
        return keyword in self.ds

    def __getattr__(self, name: str) -> Any:
        value = self.get(name)
        if value is None:
            raise AttributeError(name)
        return value

    def get(self, keyword: str, default: Any = None) -> Any:
        if keyword not in self._cache:
            self._cache[keyword] = self._parse(keyword)
        value = self._cache[keyword]
        return default if value is None else value

    def _parse(self, keyword: str) -> Any:
        vr = _FAST_VR.get(keyword)
        if vr is None or not self._fast:
            return self.ds.get(keyword)
        elem = self.ds.get_item(_FAST_TAG[keyword])
        if elem is None:
            return None
        if not isinstance(elem, RawDataElement) or elem.VR not in (None, vr[:2]):
            return self.ds.get(keyword)
        raw = elem.value
        if not raw:
            return None
        if vr == "US":
            return int.from_bytes(raw[:2], "little")
        text = raw.decode("latin-1").strip(" \x00")
        if vr in ("CSM", "DSM"):
            return [t.strip(" \x00") for t in text.split("\\")]
        return text or None




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


def read_file_header(path: Path) -> FileHeader:
    """Every header check of one file, in order; nothing beyond the header is read or allocated."""
    if path.name.startswith("._"):
        return FileHeader(path, None, "macOS resource-fork file ('._' prefix)")
    if is_temporary(path):
        return FileHeader(path, None, "unfinished temporary of an interrupted write (not a result)")
    if path.name.upper() == "DICOMDIR":
        return FileHeader(path, None, "DICOMDIR (a directory index; the image files are read directly)")
    kind = not_regular_reason(path)
    if kind is not None:
        return FileHeader(path, None, kind)
    try:
        raw, pos, size, head = _read_header(path)
    except InvalidDicomError:
        return FileHeader(path, None, "not a DICOM file")
    except Exception as exc:  # pydicom raises many types on corrupt headers
        return FileHeader(path, None, f"unreadable DICOM header ({type(exc).__name__}: {exc})")
    ds = _FastHeader(raw)
    out = FileHeader(path, ds, _skip_reason(ds))
    if out.reason is None and pos is None:
        # an image header that runs to the end of the file: cut short before its pixels
        out.reason = "truncated: the file ends before its pixel data" if not head else "no pixel data"
    if out.reason is None:
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
        if (_int_or_none(ds.get("NumberOfFrames")) or 1) > 1:
            frames = _frame_geometry(ds)
        else:
            frames = [(ds.get("ImagePositionPatient"), ds.get("ImageOrientationPatient"), ds.get("PixelSpacing"),
                       _float(ds.get("RescaleSlope"), 1.0), _float(ds.get("RescaleIntercept"), 0.0))]
    except (ValueError, TypeError, AttributeError, KeyError) as exc:
        return f"unreadable multi-frame geometry ({exc})"
    h.frame_bytes = int(ds.Rows) * int(ds.Columns) * (int(ds.get("BitsAllocated", 16) or 16) // 8)
    for ipp_v, iop_v, ps_v, slope, intercept in frames:
        iop, ipp, ps = _float_list(iop_v, 6), _float_list(ipp_v, 3), _float_list(ps_v, 2)
        if iop is None or ipp is None or ps is None:
            return "invalid ImagePositionPatient/ImageOrientationPatient/PixelSpacing"
        if np.any(ps <= 0) or np.any(ps > 100):
            return f"PixelSpacing {ps.tolist()} mm is not a scan's (must be > 0 and <= 100 mm)"
        if not (np.isfinite(slope) and np.isfinite(intercept)) or slope == 0:
            return f"RescaleSlope {slope} / RescaleIntercept {intercept} are unusable"
        iop, reason = check_orientation(iop)
        if reason is not None:
            return reason
        h.frames.append((ipp, iop, ps, slope, intercept))
    return None
