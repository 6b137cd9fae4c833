"""DICOM ingest: find the image series in a messy patient folder and load them as oriented volumes.

* :func:`discover` reads headers only (never pixel data), skips what is not a volume slice (junk,
  DICOMDIR, secondary captures, colour images, localizers, truncated files, duplicates) with the
  file and the reason, and groups the rest by SeriesInstanceUID, then orientation and image size.
* :func:`load_series` turns one group into a :class:`~cochseg3d.volume.Volume` with the geometry
  SimpleITK's ``ImageSeriesReader`` and dcm2niix give it: slices sorted along the normal
  ``cross(row, col)`` of ImageOrientationPatient (as GDCM does), origin at the first slice's
  ImagePositionPatient, ``direction = [row, col, normal]`` (LPS), values rescaled to real-world
  units (HU for CT). Missing slices and non-uniform spacing are refused with a clear error unless
  the caller asks to fill / resample; nothing is ever silently stretched.
* Enhanced (and legacy-converted enhanced) multi-frame files load like single-frame series: each
  frame's position, orientation, spacing and rescale come from the functional groups.
* :func:`load_input` loads whatever a user points at: a DICOM folder (the main image series is
  chosen) or an image file (NIfTI / NRRD / MHA).

Nothing here writes into the input folder. PatientName is never read.
"""

from __future__ import annotations

import hashlib
import logging
import os
import struct
import warnings
from collections import defaultdict
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pydicom
from pydicom.dataelem import RawDataElement
from pydicom.errors import InvalidDicomError
from pydicom.tag import Tag
from pydicom.uid import (
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    MediaStorageDirectoryStorage,
    UID,
)

from cochseg3d.utils import sanitize_case_id
from cochseg3d.volume import Volume, is_image_file, read_image

log = logging.getLogger(__name__)

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
#: orientation cosines closer than this are the same orientation
_IOP_TOL = 1e-3
#: slice steps may differ from the series' step by this fraction before the series counts as non-uniform
SPACING_RTOL = 0.01


# --- records -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class SkippedFile:
    """A file left out, and why (shown to the user; never contains PatientName)."""

    path: Path
    reason: str

    def __str__(self) -> str:
        return f"{self.path}: {self.reason}"


@dataclass
class SliceHeader:
    """What :func:`discover` keeps of one image file (header only)."""

    path: Path
    sop_uid: str
    instance_number: int | None
    position_mm: np.ndarray  # ImagePositionPatient (LPS)
    slope: float
    intercept: float
    transfer_syntax: str
    #: byte offset of the uncompressed pixel data, or None to decode with pydicom
    pixel_offset: int | None = None
    #: frame index inside an enhanced multi-frame file (None: single-frame file)
    frame: int | None = None


@dataclass
class SeriesInfo:
    """One loadable group of slices: a series (or the part of one with a single orientation/size).

    Attributes:
        series_uid: SeriesInstanceUID; ``group`` numbers the parts of a series split by
            orientation or image size (0 for the largest).
        case_id: sanitised PatientID (safe as a file name); without one ``case_<hash of StudyInstanceUID>``
            (never a folder name, which may hold a patient name).
        orientation_cosines: ImageOrientationPatient (row then column direction cosines, LPS).
        slices: the files, sorted along the slice normal (GDCM's order).
        skipped: files of this series left out (duplicates ...), with reasons.
    """

    series_uid: str
    group: int
    case_id: str
    study_uid: str
    frame_of_reference_uid: str
    series_number: int | None
    series_description: str
    modality: str
    image_type: tuple[str, ...]
    sop_class_uid: str
    rows: int
    columns: int
    pixel_spacing_mm: tuple[float, float]  # (row spacing, column spacing) as in PixelSpacing
    orientation_cosines: tuple[float, ...]
    photometric: str
    bits_allocated: int
    pixel_representation: int
    bits_stored: int
    slices: list[SliceHeader]
    folder: Path
    skipped: list[SkippedFile] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)
    #: files of this series that are unusable (truncated ...): also in the folder-level skip list
    bad_files: list[SkippedFile] = field(default_factory=list)

    # --- derived geometry --------------------------------------------------------------------
    @property
    def normal(self) -> np.ndarray:
        r, c = np.asarray(self.orientation_cosines[:3]), np.asarray(self.orientation_cosines[3:])
        return np.cross(r, c)

    @property
    def direction(self) -> np.ndarray:
        """3x3 LPS direction (columns: row direction i, column direction j, normal k)."""
        o = np.asarray(self.orientation_cosines, dtype=float)
        return np.column_stack([o[:3], o[3:], self.normal])

    @property
    def slice_positions_mm(self) -> np.ndarray:
        """Position of each slice along the normal (mm), ascending."""
        return np.array([float(np.dot(s.position_mm, self.normal)) for s in self.slices])

    @property
    def slice_steps_mm(self) -> np.ndarray:
        return np.diff(self.slice_positions_mm)

    @property
    def slice_spacing_mm(self) -> float:
        """Median distance between neighbouring slices (mm); 0 for a single slice."""
        steps = self.slice_steps_mm
        return float(np.median(steps)) if steps.size else 0.0

    @property
    def spacing_uniform(self) -> bool:
        steps = self.slice_steps_mm
        return bool(steps.size == 0 or np.all(np.abs(steps - np.median(steps)) <= _step_tol(steps)))

    @property
    def missing_slices(self) -> int:
        """Slices missing from gaps whose width is a whole number of steps (2 steps = 1 missing)."""
        steps = self.slice_steps_mm
        if steps.size == 0:
            return 0
        ref = _regular_step(steps)
        n = np.rint(steps / ref)
        ok = np.abs(steps - n * ref) <= _step_tol(steps)
        return int(np.sum((n[ok] - 1).clip(min=0)))

    @property
    def orientation(self) -> str:
        """``axial`` / ``coronal`` / ``sagittal`` (normal within 1e-3 of a patient axis) or ``oblique``."""
        n = np.abs(self.normal)
        if not np.any(np.abs(n - 1.0) < 1e-3):
            return "oblique"
        return ("sagittal", "coronal", "axial")[int(np.argmax(n))]

    @property
    def sheared(self) -> bool:
        """Slices step off the normal (gantry tilt): positions move within the slice plane."""
        if len(self.slices) < 2:
            return False
        p = np.array([s.position_mm for s in self.slices])
        d = p[-1] - p[0]
        along = float(np.dot(d, self.normal))
        inplane = np.linalg.norm(d - along * self.normal)
        # 1e-3 of the stack height (0.06 degrees) absorbs rounding of ImagePositionPatient
        return bool(inplane > max(1e-3, 1e-3 * abs(along)))

    @property
    def size(self) -> tuple[int, int, int]:
        return (self.columns, self.rows, len(self.slices))

    @property
    def is_volume(self) -> bool:
        """At least 3 slices: something a coronal stack can be made of."""
        return len(self.slices) >= 3

    @property
    def label(self) -> str:
        """A short, file-name-safe name for the series: ``<case>_s<number>[_g<group>]``."""
        num = f"s{self.series_number}" if self.series_number is not None else f"u{self.series_uid[-8:]}"
        return sanitize_case_id(f"{self.case_id}_{num}" + (f"_g{self.group}" if self.group else ""))

    def summary(self) -> dict[str, Any]:
        """JSON-ready description (no PatientName, no PatientID beyond the sanitised case id)."""
        steps = self.slice_steps_mm
        return {
            "case_id": self.case_id,
            "label": self.label,
            "series_uid": self.series_uid,
            "group": self.group,
            "series_number": self.series_number,
            "series_description": self.series_description,
            "modality": self.modality,
            "image_type": list(self.image_type),
            "orientation": self.orientation,
            "orientation_cosines": [round(float(x), 6) for x in self.orientation_cosines],
            "files": len(self.slices),
            "size": list(self.size),
            "spacing_mm": [self.pixel_spacing_mm[1], self.pixel_spacing_mm[0], round(self.slice_spacing_mm, 6)],
            "slice_spacing_uniform": self.spacing_uniform,
            "slice_step_range_mm": [round(float(steps.min()), 6), round(float(steps.max()), 6)] if steps.size else None,
            "missing_slices": self.missing_slices,
            "gantry_tilt": self.sheared,
            "transfer_syntaxes": sorted({UID(s.transfer_syntax).name for s in self.slices}),
            "folder": str(self.folder),
            "skipped": [{"file": str(s.path), "reason": s.reason} for s in self.skipped],
        }


class SeriesList(list):
    """``list[SeriesInfo]`` plus ``skipped``: every file :func:`discover` left out, with the reason."""

    def __init__(self, items: Iterable[SeriesInfo] = (), skipped: Iterable[SkippedFile] = ()):
        super().__init__(items)
        self.skipped: list[SkippedFile] = list(skipped)

    @property
    def all_skipped(self) -> list[SkippedFile]:
        """Files skipped anywhere: outside any series and inside the series (duplicates ...)."""
        return self.skipped + [s for info in self for s in info.skipped]


def _step_tol(steps: np.ndarray) -> float:
    return max(SPACING_RTOL * float(np.median(np.abs(steps))), 1e-3)


def _regular_step(steps: np.ndarray) -> float:
    """The series' slice step: the most common step (robust to a few gaps)."""
    med = float(np.median(steps))
    small = steps[steps <= med * (1 + SPACING_RTOL)]
    return float(np.median(small)) if small.size else med


# --- header reading -------------------------------------------------------------------------------
def _looks_like_raw_dicom(path: Path) -> bool:
    """A file without the 128-byte preamble that still starts with a group 0x0002/0x0008 tag."""
    try:
        with open(path, "rb") as f:
            head = f.read(4)
    except OSError:
        return False
    return len(head) == 4 and struct.unpack("<H", head[:2])[0] in (0x0002, 0x0008)


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
    file size and the element's first 12 bytes (tag, VR, length)."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        try:
            ds = pydicom.dcmread(f, stop_before_pixels=True, specific_tags=_HEADER_TAG_NUMBERS)
        except InvalidDicomError:
            if not _looks_like_raw_dicom(path):
                raise
            f.seek(0)
            ds = pydicom.dcmread(f, stop_before_pixels=True, specific_tags=_HEADER_TAG_NUMBERS, force=True)
        pos = f.tell()
        head = f.read(12)
    return ds, (pos if head[:4] == _PIXEL_DATA_TAG else None), size, head


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
    return ExplicitVRLittleEndian if little is not False else "1.2.840.10008.1.2.2"


def _pixel_data_check(
    ds: pydicom.Dataset | _FastHeader, pos: int, head: bytes, file_size: int
) -> tuple[int | None, str | None]:
    """(offset of raw pixel bytes or None, reason the file is unusable or None)."""
    ts = _transfer_syntax(ds)
    frames = _int_or_none(ds.get("NumberOfFrames")) or 1
    expected = int(ds.Rows) * int(ds.Columns) * int(ds.get("SamplesPerPixel", 1) or 1) * frames * (
        int(ds.get("BitsAllocated", 16) or 16) // 8
    )
    if ts in _RAW_SYNTAXES or ts == "1.2.840.10008.1.2.2":  # big endian: length check only
        if ts == ImplicitVRLittleEndian:
            length = struct.unpack("<I", head[4:8])[0] if len(head) >= 8 else 0
            hdr = 8
        else:
            fmt = ">I" if ts == "1.2.840.10008.1.2.2" else "<I"
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
    if file_size <= pos + 12:
        return None, "truncated: no pixel data fragments"
    return None, None


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


@dataclass
class _Candidate:
    ds: _FastHeader
    header: SliceHeader
    iop: np.ndarray
    spacing: tuple[float, float]


def discover(folder: str | os.PathLike, *, progress: bool = False) -> SeriesList:
    """Find the image series under ``folder`` (recursively), reading headers only.

    Args:
        folder: a patient folder (or a folder of patients); files need no extension.
        progress: show a progress bar.

    Returns:
        The loadable groups (by case id, then largest first) as a :class:`SeriesList` whose
        ``skipped`` lists every file left out with its reason (and each series' ``skipped`` its
        duplicates).

    Raises:
        FileNotFoundError / NotADirectoryError: ``folder`` is missing or not a folder.
    """
    folder = Path(folder)
    if not folder.exists():
        raise FileNotFoundError(f"{folder}: no such folder")
    if not folder.is_dir():
        raise NotADirectoryError(f"{folder}: not a folder")
    files = list(_iter_files(folder))
    skipped: list[SkippedFile] = []
    by_series: dict[str, list[_Candidate]] = defaultdict(list)
    bad_by_series: dict[str, list[SkippedFile]] = defaultdict(list)
    iterator: Iterable[Path] = files
    if progress:
        from tqdm.auto import tqdm

        iterator = tqdm(files, desc="reading headers", unit="file")
    for path in iterator:
        if path.name.startswith("._"):
            skipped.append(SkippedFile(path, "macOS resource-fork file ('._' prefix)"))
            continue
        if path.name.upper() == "DICOMDIR":
            skipped.append(SkippedFile(path, "DICOMDIR (a directory index; the image files are read directly)"))
            continue
        try:
            ds, pos, size, head = _read_header(path)
        except InvalidDicomError:
            skipped.append(SkippedFile(path, "not a DICOM file"))
            continue
        except Exception as exc:  # pydicom raises many types on corrupt headers
            skipped.append(SkippedFile(path, f"unreadable DICOM header ({type(exc).__name__}: {exc})"))
            continue
        ds = _FastHeader(ds)
        reason = _skip_reason(ds)
        if reason is None and pos is None:
            reason = "no pixel data"
        offset = None
        if reason is None:
            try:
                offset, reason = _pixel_data_check(ds, pos, head, size)
            except (OSError, struct.error, ValueError, TypeError) as exc:
                reason = f"unreadable pixel data header ({exc})"
        frames: list[tuple[Any, Any, Any, float, float]] = []
        if reason is None:
            try:
                if (_int_or_none(ds.get("NumberOfFrames")) or 1) > 1:
                    frames = _frame_geometry(ds)
                else:
                    frames = [(ds.get("ImagePositionPatient"), ds.get("ImageOrientationPatient"),
                               ds.get("PixelSpacing"), _float(ds.get("RescaleSlope"), 1.0),
                               _float(ds.get("RescaleIntercept"), 0.0))]
            except (ValueError, TypeError, AttributeError, KeyError) as exc:
                reason = f"unreadable multi-frame geometry ({exc})"
        cands: list[_Candidate] = []
        frame_bytes = int(ds.Rows) * int(ds.Columns) * (int(ds.get("BitsAllocated", 16) or 16) // 8) if frames else 0
        for f, (ipp_v, iop_v, ps_v, slope, intercept) in enumerate(frames):
            iop, ipp, ps = _float_list(iop_v, 6), _float_list(ipp_v, 3), _float_list(ps_v, 2)
            if iop is None or ipp is None or ps is None or np.any(ps <= 0):
                reason = "invalid ImagePositionPatient/ImageOrientationPatient/PixelSpacing"
                break
            if abs(np.dot(iop[:3], iop[3:])) > 1e-2:
                reason = "ImageOrientationPatient row and column directions are not perpendicular"
                break
            multi = len(frames) > 1
            header = SliceHeader(
                path=path,
                sop_uid=str(ds.get("SOPInstanceUID", "")) + (f"#{f}" if multi else ""),
                instance_number=(f + 1) if multi else _int_or_none(ds.get("InstanceNumber")),
                position_mm=ipp,
                slope=slope,
                intercept=intercept,
                transfer_syntax="",
                pixel_offset=None if offset is None else offset + f * frame_bytes,
                frame=f if multi else None,
            )
            cands.append(_Candidate(ds, header, iop, (float(ps[0]), float(ps[1]))))
        if reason is None and not str(ds.get("SeriesInstanceUID", "")):
            reason = "no SeriesInstanceUID"
        if reason is not None:
            skipped.append(SkippedFile(path, reason))
            uid = str(ds.get("SeriesInstanceUID", ""))
            if uid and reason.startswith(("truncated", "unreadable pixel")):
                bad_by_series[uid].append(skipped[-1])
            continue
        ts = _transfer_syntax(ds)
        for c in cands:
            c.header.transfer_syntax = ts
        by_series[str(ds.SeriesInstanceUID)].extend(cands)

    series: list[SeriesInfo] = []
    for uid, cands in by_series.items():
        parts = _split_series(uid, cands)
        parts[0].bad_files.extend(bad_by_series.get(uid, []))
        series.extend(parts)
    series.sort(key=lambda s: (s.case_id, -len(s.slices), s.series_number or 0, s.series_uid, s.group))
    log.info("%s: %d series groups, %d files skipped", folder, len(series), len(skipped))
    return SeriesList(series, skipped)


def _split_series(uid: str, cands: list[_Candidate]) -> list[SeriesInfo]:
    """Group one series' files by orientation and image size; sort; drop duplicates."""
    groups: list[list[_Candidate]] = []
    for c in cands:
        for g in groups:
            ref = g[0]
            if (
                np.allclose(c.iop, ref.iop, atol=_IOP_TOL)
                and (c.ds.Rows, c.ds.Columns) == (ref.ds.Rows, ref.ds.Columns)
                and np.allclose(c.spacing, ref.spacing, rtol=1e-4, atol=1e-5)
            ):
                g.append(c)
                break
        else:
            groups.append([c])
    groups.sort(key=len, reverse=True)
    out = []
    for gi, g in enumerate(groups):
        ref = g[0].ds
        iop = g[0].iop
        normal = np.cross(iop[:3], iop[3:])
        # GDCM's order: position along the normal; instance number breaks ties
        g.sort(key=lambda c: (float(np.dot(c.header.position_mm, normal)), c.header.instance_number or 0))
        kept: list[_Candidate] = []
        dup: list[SkippedFile] = []
        for c in g:
            if kept and np.allclose(c.header.position_mm, kept[-1].header.position_mm, atol=1e-4):
                what = (
                    "duplicate file of the same instance"
                    if c.header.sop_uid and c.header.sop_uid == kept[-1].header.sop_uid
                    else "another image at the same position"
                )
                dup.append(SkippedFile(c.header.path, f"{what} as {kept[-1].header.path.name}"))
                continue
            kept.append(c)
        patient = str(ref.get("PatientID", "") or "")
        folder = Path(os.path.commonpath([str(c.header.path.parent) for c in kept]))
        study = str(ref.get("StudyInstanceUID", "") or uid)
        # no PatientID: a name from the study UID, never from folder names (they may hold a name)
        fallback = "case_" + hashlib.sha1(study.encode()).hexdigest()[:8]
        out.append(
            SeriesInfo(
                series_uid=uid,
                group=gi,
                case_id=sanitize_case_id(patient, fallback=fallback),
                study_uid=str(ref.get("StudyInstanceUID", "")),
                frame_of_reference_uid=str(ref.get("FrameOfReferenceUID", "")),
                series_number=_int_or_none(ref.get("SeriesNumber")),
                series_description=str(ref.get("SeriesDescription", "") or ""),
                modality=str(ref.get("Modality", "") or "OT"),
                image_type=tuple(str(t) for t in (ref.get("ImageType") or [])),
                sop_class_uid=str(ref.get("SOPClassUID", "")),
                rows=int(ref.Rows),
                columns=int(ref.Columns),
                pixel_spacing_mm=g[0].spacing,
                orientation_cosines=tuple(float(x) for x in iop),
                photometric=str(ref.get("PhotometricInterpretation", "MONOCHROME2")).upper(),
                bits_allocated=int(ref.get("BitsAllocated", 16) or 16),
                pixel_representation=int(ref.get("PixelRepresentation", 0) or 0),
                bits_stored=int(ref.get("BitsStored", 0) or ref.get("BitsAllocated", 16) or 16),
                slices=[c.header for c in kept],
                folder=folder,
                skipped=dup,
                extra={
                    k: str(ref.get(k))
                    for k in ("Manufacturer", "ManufacturerModelName", "StudyDate", "BodyPartExamined",
                              "ConvolutionKernel", "KVP", "SliceThickness", "GantryDetectorTilt")
                    if ref.get(k) not in (None, "")
                },
            )
        )
    return out


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
        raise ValueError(f"{header.path}: cannot decode pixel data ({type(exc).__name__}: {exc})") from exc
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
            f"{_bad_note(info.bad_files)}Pass on_gap='interpolate' to fill them."
        )
    ref_step = _regular_step(steps) if steps.size else 0.0
    if steps.size and not missing and not info.spacing_uniform and on_nonuniform != "resample":
        raise SeriesGapError(
            f"{info.folder}: series {info.label} has non-uniform slice spacing "
            f"({steps.min():.4g}..{steps.max():.4g} mm); pass on_nonuniform='resample' to resample onto "
            f"{ref_step:.4g} mm"
        )

    stored_dtype = _stored_dtype(info)
    stored = np.empty((n, info.rows, info.columns), dtype=stored_dtype)

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
                f"{_bad_note(bad)}Pass on_gap='interpolate' to fill them from their neighbours."
            )
        _fill_slices(stored, sorted(failed), info.slice_positions_mm)
        log.warning("%s: filled %d unreadable slice(s) of %s by interpolation: %s", info.folder,
                    len(failed), info.label, "; ".join(str(b) for b in bad))

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


# --- entry points ---------------------------------------------------------------------------------
def choose_main_series(series: Sequence[SeriesInfo]) -> SeriesInfo:
    """The series a user most likely means: a CT volume with the most slices (then finest voxels)."""
    volumes = [s for s in series if s.is_volume]
    if not volumes:
        raise ValueError("no image volume series (need at least 3 slices of one orientation)")

    def key(s: SeriesInfo):
        voxel = s.pixel_spacing_mm[0] * s.pixel_spacing_mm[1] * max(s.slice_spacing_mm, 1e-6)
        return (s.modality.upper() == "CT", "DERIVED" not in [t.upper() for t in s.image_type],
                len(s.slices) * s.rows * s.columns, -voxel)

    return max(volumes, key=key)


def load_input(path: str | os.PathLike, **load_options: Any) -> Volume:
    """Load a DICOM folder (its main image series) or an image file (NIfTI / NRRD / MHA).

    Args:
        path: a folder of DICOM files, a single DICOM file (its folder is searched for the series
            it belongs to), or an image file.
        **load_options: passed to :func:`load_series` (``on_gap``, ``on_nonuniform`` ...).

    Returns:
        The Volume; ``meta`` has "case_id" (sanitised), "series_uid", "series_number",
        "series_description", "modality", "source".

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: no loadable image in ``path`` (the message lists why files were skipped).
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file or folder")
    if path.is_file() and is_image_file(path):
        vol = read_image(path)
        name = path.name
        for suf in (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd"):
            if name.lower().endswith(suf):
                name = name[: -len(suf)]
                break
        vol.meta.update({"case_id": sanitize_case_id(name), "series_uid": "", "series_number": None,
                         "series_description": "", "modality": "", "source": str(path)})
        return vol
    wanted_uid = None
    folder = path
    if path.is_file():
        try:
            ds = _read_header(path)[0]
        except Exception as exc:
            raise ValueError(f"{path}: neither an image file nor readable DICOM ({exc})") from exc
        wanted_uid = str(ds.get("SeriesInstanceUID", ""))
        folder = path.parent
    found = discover(folder)
    candidates = [s for s in found if s.series_uid == wanted_uid] if wanted_uid else list(found)
    try:
        info = choose_main_series(candidates)
    except ValueError as exc:
        reasons = "; ".join(str(s) for s in found.all_skipped[:5])
        more = f" (and {len(found.all_skipped) - 5} more)" if len(found.all_skipped) > 5 else ""
        raise ValueError(f"{path}: {exc}. Skipped: {reasons or 'nothing'}{more}") from None
    log.info("%s: loading series %s (%s, %d files)", path, info.label, info.series_description, len(info.slices))
    return load_series(info, **load_options)


def is_dicom_folder(path: str | os.PathLike) -> bool:
    """True if ``path`` is a folder (not an image file) — treated as DICOM by :func:`load_input`."""
    return Path(path).is_dir()


def check_output_outside_input(inp: str | os.PathLike, out: str | os.PathLike) -> None:
    """Refuse an output folder inside (or equal to) the input folder: the input is never written to.

    Raises:
        ValueError: ``out`` is ``inp`` or below it.
    """
    inp_r, out_r = Path(inp).resolve(), Path(out).resolve()
    if inp_r.is_dir() and (out_r == inp_r or inp_r in out_r.parents):
        raise ValueError(f"{out}: is inside the input folder {inp}; choose an output folder outside it")


def coronal_file_filter(
    folder: str | os.PathLike, *, tolerance: float = 0.05,
    target: Sequence[float] = (1.0, 0.0, 0.0, 0.0, 0.0, -1.0),
) -> tuple[list[Path], list[SkippedFile]]:
    """The seed workflow's filter: files whose ImageOrientationPatient matches ``target``.

    Args:
        folder: searched recursively; nothing is written.
        tolerance: largest allowed difference of any direction cosine (the seed rounded to 0 digits,
            i.e. 0.5; the default 0.05 is about 3 degrees).
        target: the orientation wanted, default coronal (1,0,0,0,0,-1).

    Returns:
        (matching files, other files with the reason they do not match).
    """
    target_a = np.asarray(target, dtype=float)
    keep: list[Path] = []
    other: list[SkippedFile] = []
    for path in _iter_files(Path(folder)):
        if path.name.startswith("._"):
            other.append(SkippedFile(path, "macOS resource-fork file ('._' prefix)"))
            continue
        try:
            ds = _read_header(path)[0]
        except Exception:
            other.append(SkippedFile(path, "not a DICOM file"))
            continue
        iop = _float_list(ds.get("ImageOrientationPatient"), 6)
        if iop is None:
            other.append(SkippedFile(path, "no ImageOrientationPatient"))
        elif np.max(np.abs(iop - target_a)) <= tolerance:
            keep.append(path)
        else:
            other.append(SkippedFile(path, f"orientation {np.round(iop, 3).tolist()} is not coronal"))
    return keep, other
