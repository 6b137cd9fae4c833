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
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
from pydicom.uid import UID

from cochseg3d.dicom_header import (  # noqa: F401  (re-exported: the reader's public names live here)
    HEADER_TAGS,
    SkippedFile,
    _FastHeader,
    _float_list,
    _int_or_none,
    _IOP_TOL,
    check_orientation,
    _looks_like_raw_dicom,
    _read_header,
    display_path,
    is_dicom_file,
    not_regular_reason,
    read_file_header,
    _transfer_syntax,
    _iter_files,
    _pixel_data_check,
    _skip_reason,
    _frame_geometry,
)
from cochseg3d.dicom_load import (  # noqa: F401
    SPACING_RTOL,
    SeriesGapError,
    _regular_step,
    _step_tol,
    load_series,
)
from cochseg3d.utils import sanitize_case_id
from cochseg3d.volume import Volume, is_image_file, read_image

log = logging.getLogger(__name__)


# --- records -------------------------------------------------------------------------------------
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
            "folder": display_path(self.folder),
            "skipped": [{"file": display_path(s.path), "reason": s.reason} for s in self.skipped],
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

    def skip_report(self, limit: int | None = 30) -> list[str]:
        """Lines telling the user every skipped file and why; beyond ``limit`` files, one line per
        reason with a few of its files (``None``: every file)."""
        skipped = self.all_skipped
        if not skipped:
            return []
        lines = [f"skipped {len(skipped)} file(s):"]
        if limit is None or len(skipped) <= limit:
            return lines + [f"  {s}" for s in skipped]
        by_reason: dict[str, list[Path]] = {}
        for s in skipped:
            by_reason.setdefault(s.reason, []).append(s.path)
        for reason, paths in sorted(by_reason.items(), key=lambda kv: -len(kv[1])):
            names = ", ".join(display_path(p) for p in paths[:3]) + (", ..." if len(paths) > 3 else "")
            lines.append(f"  {len(paths)} x {reason}: {names}")
        return lines


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
        h = read_file_header(path)
        if h.reason is not None:
            skipped.append(SkippedFile(path, h.reason))
            if h.unreadable_slice:
                bad_by_series[h.series_uid].append(skipped[-1])
            continue
        ts = _transfer_syntax(h.ds)
        multi = len(h.frames) > 1
        for f, (ipp, iop, ps, slope, intercept) in enumerate(h.frames):
            header = SliceHeader(
                path=path,
                sop_uid=str(h.ds.get("SOPInstanceUID", "")) + (f"#{f}" if multi else ""),
                instance_number=(f + 1) if multi else _int_or_none(h.ds.get("InstanceNumber")),
                position_mm=ipp,
                slope=slope,
                intercept=intercept,
                transfer_syntax=ts,
                pixel_offset=None if h.offset is None else h.offset + f * h.frame_bytes,
                frame=f if multi else None,
            )
            by_series[h.series_uid].append(_Candidate(h.ds, header, iop, (float(ps[0]), float(ps[1]))))

    series: list[SeriesInfo] = []
    for uid, cands in by_series.items():
        parts = _split_series(uid, cands)
        parts[0].bad_files.extend(bad_by_series.get(uid, []))
        series.extend(parts)
    _attribute_unreadable(series, skipped)
    series.sort(key=lambda s: (s.case_id, -len(s.slices), s.series_number or 0, s.series_uid, s.group))
    log.info("%s: %d series groups, %d files skipped", folder, len(series), len(skipped))
    return SeriesList(series, skipped)


def _attribute_unreadable(series: list[SeriesInfo], skipped: list[SkippedFile]) -> None:
    """A file whose header is cut short names no series; when a series in its folder misses slices,
    it is most likely one of them, so the gap message lists it with its reason."""
    unreadable = [s for s in skipped if s.reason.startswith(("truncated", "unreadable"))]
    for info in series:
        if unreadable and info.missing_slices:
            known = {b.path for b in info.bad_files}
            dirs = {h.path.parent for h in info.slices}
            info.bad_files.extend(s for s in unreadable if s.path.parent in dirs and s.path not in known)


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


# --- entry points ---------------------------------------------------------------------------------
def rank_series(series: Sequence[SeriesInfo]) -> list[SeriesInfo]:
    """The volume series (>= 3 slices), the one a user most likely means first: CT, not derived,
    the most voxels, then the finest."""

    def key(s: SeriesInfo):
        voxel = s.pixel_spacing_mm[0] * s.pixel_spacing_mm[1] * max(s.slice_spacing_mm, 1e-6)
        return (s.modality.upper() == "CT", "DERIVED" not in [t.upper() for t in s.image_type],
                len(s.slices) * s.rows * s.columns, -voxel)

    return sorted((s for s in series if s.is_volume), key=key, reverse=True)


def choose_main_series(series: Sequence[SeriesInfo]) -> SeriesInfo:
    """The series a user most likely means: a CT volume with the most slices (then finest voxels)."""
    ranked = rank_series(series)
    if not ranked:
        raise ValueError("no image volume series (need at least 3 slices of one orientation)")
    return ranked[0]


def load_main_series(series: Sequence[SeriesInfo], **load_options: Any) -> Volume:
    """Load the main series; if it cannot be loaded (a gap, an unreadable slice ...), the next most
    likely one, with a warning naming why the first was passed over: a bad series does not sink a
    patient. ``meta["passed_over"]`` keeps those reasons.

    Raises:
        ValueError / SeriesGapError: no volume series, or none loads (the main series' error first).
    """
    ranked = rank_series(series)
    if not ranked:
        raise ValueError("no image volume series (need at least 3 slices of one orientation)")
    errors: list[ValueError] = []
    for info in ranked:
        log.info("%s: loading series %s (%s, %d files)", info.folder, info.label, info.series_description,
                 len(info.slices))
        try:
            vol = load_series(info, **load_options)
        except ValueError as exc:  # SeriesGapError too: try the next series of this patient
            errors.append(exc)
            continue
        if errors:
            log.warning("%s: series %s used instead of the main series: %s", info.folder, info.label,
                        " | ".join(str(e) for e in errors))
            vol.meta["passed_over"] = [str(e) for e in errors]
        return vol
    if len(errors) == 1:
        raise errors[0]
    raise type(errors[0])(f"{errors[0]} (and {len(errors) - 1} other series of this patient failed too)")


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
        raise FileNotFoundError(f"{display_path(path)}: no such file or folder")
    kind = None if path.is_dir() else not_regular_reason(path)
    if kind is not None:
        raise ValueError(f"{display_path(path)}: {kind}")
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
    if not rank_series(candidates):
        reasons = "; ".join(str(s) for s in found.all_skipped[:5])
        more = f" (and {len(found.all_skipped) - 5} more)" if len(found.all_skipped) > 5 else ""
        raise ValueError(f"{display_path(path)}: no image volume series (need at least 3 slices of one "
                         f"orientation). Skipped: {reasons or 'nothing'}{more}")
    if wanted_uid:  # the user pointed at this series' file: no other series instead
        return load_series(choose_main_series(candidates), **load_options)
    return load_main_series(candidates, **load_options)


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

    ImageOrientationPatient is checked as :func:`discover` checks it: vectors near unit length are
    normalised before the comparison, a zero, non-unit or skewed one is refused with its reason.

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
        kind = not_regular_reason(path)
        if kind is not None:
            other.append(SkippedFile(path, kind))
            continue
        try:
            ds = _read_header(path)[0]
        except Exception:
            other.append(SkippedFile(path, "not a DICOM file"))
            continue
        iop = _float_list(ds.get("ImageOrientationPatient"), 6)
        if iop is None:
            other.append(SkippedFile(path, "no ImageOrientationPatient"))
            continue
        iop, reason = check_orientation(iop)  # near-unit vectors normalised, others refused, as discover does
        if reason is not None:
            other.append(SkippedFile(path, reason))
        elif np.max(np.abs(iop - target_a)) <= tolerance:
            keep.append(path)
        else:
            other.append(SkippedFile(path, f"orientation {np.round(iop, 3).tolist()} is not coronal"))
    return keep, other
