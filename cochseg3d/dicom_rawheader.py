"""DICOM header reading at the byte level: which files may be opened, the header read itself
(with or without the 128-byte preamble), the transfer syntax, and a fast view of the fields
every file needs. Nothing here judges whether what was read is usable (see :mod:`dicom_checks`).
PatientName is never read.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
from pydicom.dataelem import RawDataElement
from pydicom.errors import InvalidDicomError
from pydicom.tag import Tag
from pydicom.uid import ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian

from cochseg3d.dicom_deflate import looks_deflated
from cochseg3d.dicom_deflate import read_header as read_deflated_header
from cochseg3d.utils import display_path, not_regular_reason

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
_PIXEL_DATA_TAG = struct.pack("<HH", 0x7FE0, 0x0010)
_PIXEL_DATA_TAG_BE = struct.pack(">HH", 0x7FE0, 0x0010)


# --- which files may be opened --------------------------------------------------------------------
class NotRegularFileError(OSError):
    """The path is a pipe, device, socket or folder: opening it could block, so it is never opened."""


def _open_regular(path: str | os.PathLike):
    """``open(path, "rb")`` for regular files only (a FIFO would block the caller forever)."""
    reason = not_regular_reason(path)
    if reason is not None and reason != "empty file":
        raise NotRegularFileError(f"{display_path(path)}: {reason}")
    return open(path, "rb")


def _iter_files(folder: Path) -> Iterable[Path]:
    for root, dirs, files in os.walk(folder):
        dirs.sort()
        for name in sorted(files):
            yield Path(root) / name


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


def _read_header(path: Path) -> tuple[pydicom.Dataset, int | None, int, bytes]:
    """Header (no pixel data), the file offset of the Pixel Data element (None if absent), the
    file size and the element's first 12 bytes (tag, VR, length). Of a deflated file the offset
    is the element's in the inflated dataset (:mod:`dicom_deflate`).

    Raises:
        NotRegularFileError: ``path`` is a pipe, device ... (checked before opening).
        InvalidDicomError: neither Part 10 nor a preamble-less dataset.
    """
    with _open_regular(path) as f:
        size = os.fstat(f.fileno()).st_size
        if looks_deflated(f):  # pydicom would inflate the whole dataset for its header
            ds, pos, head = read_deflated_header(path)
            return ds, pos, size, head
        f.seek(0)
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


# --- value conversion -----------------------------------------------------------------------------
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
