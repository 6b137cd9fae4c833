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

The records live in :mod:`cochseg3d.dicom_series`, discovery in :mod:`cochseg3d.dicom_discover`,
pixel loading in :mod:`cochseg3d.dicom_load`; this module is their public face (every name is
importable from here) plus the choice of the main series.

Nothing here writes into the input folder. PatientName is never read.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from cochseg3d.dicom_discover import (  # noqa: F401  (re-exported: discovery's names live here too)
    _attribute_unreadable,
    _Candidate,
    _split_series,
    discover,
)
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
from cochseg3d.dicom_series import SeriesInfo, SeriesList, SliceHeader  # noqa: F401
from cochseg3d.utils import sanitize_case_id
from cochseg3d.volume import Volume, is_image_file, read_image

log = logging.getLogger(__name__)


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
        return _load_image_file(path)
    wanted_uid = _series_uid_of(path) if path.is_file() else None
    found = discover(path.parent if path.is_file() else path)
    candidates = [s for s in found if s.series_uid == wanted_uid] if wanted_uid else list(found)
    if not rank_series(candidates):
        reasons = "; ".join(str(s) for s in found.all_skipped[:5])
        more = f" (and {len(found.all_skipped) - 5} more)" if len(found.all_skipped) > 5 else ""
        raise ValueError(f"{display_path(path)}: no image volume series (need at least 3 slices of one "
                         f"orientation). Skipped: {reasons or 'nothing'}{more}")
    if wanted_uid:  # the user pointed at this series' file: no other series instead
        return load_series(choose_main_series(candidates), **load_options)
    return load_main_series(candidates, **load_options)


def _load_image_file(path: Path) -> Volume:
    """An image file (NIfTI / NRRD / MHA) as a Volume, its case id from the file name."""
    vol = read_image(path)
    name = path.name
    for suf in (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd"):
        if name.lower().endswith(suf):
            name = name[: -len(suf)]
            break
    vol.meta.update({"case_id": sanitize_case_id(name), "series_uid": "", "series_number": None,
                     "series_description": "", "modality": "", "source": str(path)})
    return vol


def _series_uid_of(path: Path) -> str:
    """The SeriesInstanceUID of one DICOM file the user pointed at."""
    try:
        ds = _read_header(path)[0]
    except Exception as exc:
        raise ValueError(f"{path}: neither an image file nor readable DICOM ({exc})") from exc
    return str(ds.get("SeriesInstanceUID", ""))


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
        reason = _not_coronal_reason(path, target_a, tolerance)
        if reason is None:
            keep.append(path)
        else:
            other.append(SkippedFile(path, reason))
    return keep, other


def _not_coronal_reason(path: Path, target: np.ndarray, tolerance: float) -> str | None:
    """Why ``path`` is not a file of orientation ``target`` (None: it is)."""
    if path.name.startswith("._"):
        return "macOS resource-fork file ('._' prefix)"
    kind = not_regular_reason(path)
    if kind is not None:
        return kind
    try:
        ds = _read_header(path)[0]
    except Exception:
        return "not a DICOM file"
    iop = _float_list(ds.get("ImageOrientationPatient"), 6)
    if iop is None:
        return "no ImageOrientationPatient"
    iop, reason = check_orientation(iop)  # near-unit vectors normalised, others refused, as discover does
    if reason is not None:
        return reason
    if np.max(np.abs(iop - target)) <= tolerance:
        return None
    return f"orientation {np.round(iop, 3).tolist()} is not coronal"
