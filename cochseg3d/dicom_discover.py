"""DICOM series discovery: read the headers under a folder and group the slices into series.

:func:`discover` reads headers only (never pixel data), skips what is not a volume slice with the
file and the reason, and groups the rest by SeriesInstanceUID, then orientation and image size;
each group is sorted along its slice normal (GDCM's order) with duplicates dropped.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cochseg3d.dicom_header import (
    SkippedFile,
    _FastHeader,
    _int_or_none,
    _IOP_TOL,
    _iter_files,
    _transfer_syntax,
    read_file_header,
)
from cochseg3d.dicom_series import SeriesInfo, SeriesList, SliceHeader
from cochseg3d.utils import sanitize_case_id

# the name users and tests filter on, wherever the code lives
log = logging.getLogger("cochseg3d.dicom")

#: header values kept in ``SeriesInfo.extra`` when present
_EXTRA_TAGS = ("Manufacturer", "ManufacturerModelName", "StudyDate", "BodyPartExamined",
               "ConvolutionKernel", "KVP", "SliceThickness", "GantryDetectorTilt")


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
    skipped, by_series, bad_by_series = _read_candidates(list(_iter_files(folder)), progress)
    series: list[SeriesInfo] = []
    for uid, cands in by_series.items():
        parts = _split_series(uid, cands)
        parts[0].bad_files.extend(bad_by_series.get(uid, []))
        series.extend(parts)
    _attribute_unreadable(series, skipped)
    series.sort(key=lambda s: (s.case_id, -len(s.slices), s.series_number or 0, s.series_uid, s.group))
    log.info("%s: %d series groups, %d files skipped", folder, len(series), len(skipped))
    return SeriesList(series, skipped)


def _read_candidates(
    files: list[Path], progress: bool
) -> tuple[list[SkippedFile], dict[str, list[_Candidate]], dict[str, list[SkippedFile]]]:
    """Read every file's header: (skipped files, slices by series uid, unreadable slices by series uid)."""
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
        by_series[h.series_uid].extend(_file_candidates(path, h))
    return skipped, by_series, bad_by_series


def _file_candidates(path: Path, h) -> list[_Candidate]:
    """One candidate slice per frame of a readable file (one for a single-frame file)."""
    ts = _transfer_syntax(h.ds)
    multi = len(h.frames) > 1
    out = []
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
        out.append(_Candidate(h.ds, header, iop, (float(ps[0]), float(ps[1]))))
    return out


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
    out = []
    for gi, g in enumerate(_group_by_geometry(cands)):
        first = g[0]  # series-level values from the group's first file as read, its spacing once sorted
        kept, dup = _sort_and_drop_duplicates(g)
        out.append(_series_info(uid, gi, first, g[0].spacing, kept, dup))
    return out


def _same_geometry(c: _Candidate, ref: _Candidate) -> bool:
    return bool(
        np.allclose(c.iop, ref.iop, atol=_IOP_TOL)
        and (c.ds.Rows, c.ds.Columns) == (ref.ds.Rows, ref.ds.Columns)
        and np.allclose(c.spacing, ref.spacing, rtol=1e-4, atol=1e-5)
    )


def _group_by_geometry(cands: list[_Candidate]) -> list[list[_Candidate]]:
    """Candidates grouped by orientation, image size and pixel spacing; the largest group first."""
    groups: list[list[_Candidate]] = []
    for c in cands:
        for g in groups:
            if _same_geometry(c, g[0]):
                g.append(c)
                break
        else:
            groups.append([c])
    groups.sort(key=len, reverse=True)
    return groups


def _sort_and_drop_duplicates(g: list[_Candidate]) -> tuple[list[_Candidate], list[SkippedFile]]:
    """Sort one group in place along its normal; (kept slices, skipped duplicates with reasons)."""
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
    return kept, dup


def _case_id(ref: _FastHeader, uid: str) -> str:
    """The sanitised PatientID; without one a name from the study UID, never from folder names
    (they may hold a patient name)."""
    patient = str(ref.get("PatientID", "") or "")
    study = str(ref.get("StudyInstanceUID", "") or uid)
    fallback = "case_" + hashlib.sha1(study.encode()).hexdigest()[:8]
    return sanitize_case_id(patient, fallback=fallback)


def _series_info(uid: str, gi: int, first: _Candidate, spacing: tuple[float, float],
                 kept: list[_Candidate], dup: list[SkippedFile]) -> SeriesInfo:
    """The SeriesInfo of one sorted group, its series-level values taken from ``first``'s header."""
    ref = first.ds
    return SeriesInfo(
        series_uid=uid,
        group=gi,
        case_id=_case_id(ref, uid),
        study_uid=str(ref.get("StudyInstanceUID", "")),
        frame_of_reference_uid=str(ref.get("FrameOfReferenceUID", "")),
        series_number=_int_or_none(ref.get("SeriesNumber")),
        series_description=str(ref.get("SeriesDescription", "") or ""),
        modality=str(ref.get("Modality", "") or "OT"),
        image_type=tuple(str(t) for t in (ref.get("ImageType") or [])),
        sop_class_uid=str(ref.get("SOPClassUID", "")),
        rows=int(ref.Rows),
        columns=int(ref.Columns),
        pixel_spacing_mm=spacing,
        orientation_cosines=tuple(float(x) for x in first.iop),
        photometric=str(ref.get("PhotometricInterpretation", "MONOCHROME2")).upper(),
        bits_allocated=int(ref.get("BitsAllocated", 16) or 16),
        pixel_representation=int(ref.get("PixelRepresentation", 0) or 0),
        bits_stored=int(ref.get("BitsStored", 0) or ref.get("BitsAllocated", 16) or 16),
        slices=[c.header for c in kept],
        folder=Path(os.path.commonpath([str(c.header.path.parent) for c in kept])),
        skipped=dup,
        extra={k: str(ref.get(k)) for k in _EXTRA_TAGS if ref.get(k) not in (None, "")},
    )
