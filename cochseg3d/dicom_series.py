"""DICOM series records: one slice's header (:class:`SliceHeader`), one loadable group of slices
(:class:`SeriesInfo`, with its derived geometry) and the list :func:`~cochseg3d.dicom.discover`
returns (:class:`SeriesList`, with every skipped file)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from pydicom.uid import UID

from cochseg3d.dicom_header import SkippedFile, display_path
from cochseg3d.dicom_load import _regular_step, _step_tol
from cochseg3d.utils import sanitize_case_id


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
