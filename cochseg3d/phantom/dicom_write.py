"""Write a :class:`~cochseg3d.volume.Volume` as a de-identified DICOM image series.

Used by the phantom (synthetic patients; hence it lives in ``cochseg3d.phantom``) and by the tests
that check the loader against SimpleITK and dcm2niix. One file per ``k`` slice, stored values
``int16`` (BitsAllocated 16, PixelRepresentation 1) with ``HU = stored * RescaleSlope +
RescaleIntercept``, explicit VR little endian. UIDs are deterministic: the same ``uid_seed`` (or,
without one, the same content) gives the same Study/Series/SOP/FrameOfReference UIDs, so written
data sets are reproducible.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import (
    CTImageStorage,
    ExplicitVRLittleEndian,
    MRImageStorage,
    PositronEmissionTomographyImageStorage,
    PYDICOM_IMPLEMENTATION_UID,
    generate_uid,
)

from cochseg3d.volume import Volume, atomic_write

log = logging.getLogger(__name__)

_SOP_CLASS = {"CT": CTImageStorage, "MR": MRImageStorage, "PT": PositronEmissionTomographyImageStorage}
#: fixed, obviously synthetic dates so written files are byte-reproducible
_DATE, _TIME = "20000101", "120000"


def _fmt_ds(x: float) -> str:
    """A Decimal String value (<= 16 chars) that keeps as many significant digits as fit."""
    x = float(x)
    if x == 0:
        return "0"
    for prec in range(16, 0, -1):
        s = f"{x:.{prec}g}"
        if "e" in s:  # DS allows exponents but keep plain notation where possible
            s = np.format_float_positional(float(s), trim="-")
        if len(s) <= 16:
            return s
    raise ValueError(f"cannot encode {x} as a DICOM decimal string")


def _ds_list(values: Sequence[float]) -> list[str]:
    return [_fmt_ds(v) for v in values]


def _content_seed(volume: Volume, patient_id: str, series_number: int, series_description: str) -> str:
    h = hashlib.blake2b(digest_size=16)
    h.update(f"{patient_id}|{series_number}|{series_description}|{volume.grid}".encode())
    h.update(np.ascontiguousarray(volume.array).view(np.uint8).reshape(-1)[: 1 << 24].tobytes())
    return h.hexdigest()


def stored_values(
    array: np.ndarray, *, rescale_slope: float = 1.0, rescale_intercept: float = -1024.0
) -> np.ndarray:
    """Stored ``int16`` values for real-world values (HU): ``round((array - intercept) / slope)``.

    Raises:
        ValueError: if a value is not finite or does not fit ``int16`` after rescaling (never
            clipped silently).
    """
    if rescale_slope == 0:
        raise ValueError("rescale_slope must not be 0")
    a = np.asarray(array)
    if rescale_slope == 1.0 and float(rescale_intercept).is_integer() and np.issubdtype(a.dtype, np.integer):
        s = a.astype(np.int32) - int(rescale_intercept)
    else:
        if a.dtype.kind == "f" and not np.all(np.isfinite(a)):
            raise ValueError("values contain NaN or infinity; DICOM stores integers only")
        s = np.rint((a.astype(np.float64) - rescale_intercept) / rescale_slope)
    lo, hi = (float(s.min()), float(s.max())) if s.size else (0.0, 0.0)
    if lo < -32768 or hi > 32767:
        raise ValueError(
            f"values {lo * rescale_slope + rescale_intercept:g}..{hi * rescale_slope + rescale_intercept:g} "
            f"do not fit int16 with slope {rescale_slope:g} and intercept {rescale_intercept:g}"
        )
    return s.astype("<i2")


def write_series(
    volume: Volume,
    folder: str | os.PathLike,
    *,
    patient_id: str,
    study_uid: str | None = None,
    series_uid: str | None = None,
    frame_of_reference_uid: str | None = None,
    series_number: int = 1,
    series_description: str = "",
    modality: str = "CT",
    uid_seed: str | None = None,
    rescale_slope: float = 1.0,
    rescale_intercept: float = -1024.0,
    image_type: list[str] | None = None,
    extra: dict[str, Any] | None = None,
) -> list[Path]:
    """Write ``volume`` as one DICOM file per ``k`` slice into ``folder``.

    Geometry: ImageOrientationPatient is ``direction[:, 0]`` (row direction, along ``i``) and
    ``direction[:, 1]`` (column direction, along ``j``); slice ``k``'s ImagePositionPatient is
    ``origin + k * spacing[2] * direction[:, 2]`` (LPS mm); PixelSpacing is ``(spacing[1],
    spacing[0])`` (row spacing, column spacing). A DICOM reader sorts slices along the normal
    ``cross(row, col)``; if ``direction`` is left-handed the files still hold the same physical
    image, but readers return it with ``k`` reversed.

    Args:
        volume: image in real-world units (HU for CT), ``array[k, j, i]``.
        folder: output folder (created); existing files with the same names are replaced.
        patient_id: PatientID written to every file (the only identity written; PatientName is a
            fixed placeholder unless ``extra`` sets one).
        study_uid, series_uid, frame_of_reference_uid: UIDs to use; derived from ``uid_seed``
            when not given.
        series_number, series_description, modality: as written to the headers. ``modality`` is
            ``"CT"``, ``"MR"`` or ``"PT"`` (sets the SOP class).
        uid_seed: makes every UID deterministic; without it they derive from the content.
        rescale_slope, rescale_intercept: ``value = stored * slope + intercept``; stored values
            must fit ``int16`` (ValueError otherwise; values are never clipped).
        image_type: ImageType, default ``["ORIGINAL", "PRIMARY", "AXIAL"]``.
        extra: DICOM keyword -> value set on every file last (may override anything above).

    Returns:
        The written paths, in ``k`` order.
    """
    modality = modality.upper()
    if modality not in _SOP_CLASS:
        raise ValueError(f"modality {modality!r} not supported; use one of {sorted(_SOP_CLASS)}")
    stored = stored_values(volume.array, rescale_slope=rescale_slope, rescale_intercept=rescale_intercept)
    seed = uid_seed if uid_seed is not None else _content_seed(
        volume, patient_id, series_number, series_description
    )
    study_uid = study_uid or generate_uid(entropy_srcs=[seed, "study"])
    series_uid = series_uid or generate_uid(entropy_srcs=[seed, "series", str(series_number)])
    frame_uid = frame_of_reference_uid or generate_uid(entropy_srcs=[seed, "frame-of-reference"])
    d = volume.direction
    if float(np.dot(np.cross(d[:, 0], d[:, 1]), d[:, 2])) < 0:
        log.debug("left-handed direction: readers will return this series with k reversed")
    ds = _series_header(volume, stored.shape, modality=modality, patient_id=patient_id, study_uid=study_uid,
                        series_uid=series_uid, frame_uid=frame_uid, series_number=series_number,
                        series_description=series_description, rescale_slope=rescale_slope,
                        rescale_intercept=rescale_intercept, image_type=image_type, extra=extra)
    paths = _write_slices(ds, volume, stored, Path(folder), modality=modality, series_uid=series_uid,
                          series_number=series_number, extra=extra)
    log.debug("wrote %d files of series %s to %s", len(paths), series_uid, folder)
    return paths


def _series_header(volume: Volume, shape_kji: tuple[int, ...], *, modality: str, patient_id: str, study_uid: str,
                   series_uid: str, frame_uid: str, series_number: int, series_description: str,
                   rescale_slope: float, rescale_intercept: float, image_type: list[str] | None,
                   extra: dict[str, Any] | None) -> Dataset:
    """The header every file of the series shares (the per-slice tags are set by :func:`_write_slices`)."""
    d = volume.direction
    row, col = d[:, 0], d[:, 1]
    sx, sy, sz = volume.spacing_mm
    _, nj, ni = shape_kji

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = _SOP_CLASS[modality]
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    meta.ImplementationVersionName = "COCHSEG3D"

    ds = Dataset()
    ds.file_meta = meta
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.ImageType = list(image_type or ["ORIGINAL", "PRIMARY", "AXIAL"])
    ds.SOPClassUID = _SOP_CLASS[modality]
    ds.StudyDate = ds.SeriesDate = ds.ContentDate = ds.AcquisitionDate = _DATE
    ds.StudyTime = ds.SeriesTime = ds.ContentTime = ds.AcquisitionTime = _TIME
    ds.AccessionNumber = ""
    ds.Modality = modality
    ds.Manufacturer = "cochseg3d"
    ds.ManufacturerModelName = "synthetic"
    ds.InstitutionName = ""
    ds.ReferringPhysicianName = ""
    ds.StudyDescription = "synthetic"
    ds.SeriesDescription = series_description
    ds.PatientName = "ANONYMOUS^"  # family^given: a single component is ambiguous
    ds.PatientID = str(patient_id)
    ds.PatientBirthDate = ""
    ds.PatientSex = "O"
    ds.PatientIdentityRemoved = "YES"
    ds.DeidentificationMethod = "synthetic data written by cochseg3d"
    if modality == "CT":
        ds.KVP = ""
    ds.SliceThickness = _fmt_ds(sz)
    ds.SpacingBetweenSlices = _fmt_ds(sz)
    ds.PatientPosition = "HFS"
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = series_uid
    ds.StudyID = "1"
    ds.SeriesNumber = int(series_number)
    ds.AcquisitionNumber = 1
    ds.ImageOrientationPatient = _ds_list([*row, *col])
    ds.FrameOfReferenceUID = frame_uid
    ds.PositionReferenceIndicator = ""
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows = nj
    ds.Columns = ni
    ds.PixelSpacing = _ds_list([sy, sx])
    ds.BitsAllocated = 16
    ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 1
    ds.RescaleIntercept = _fmt_ds(rescale_intercept)
    ds.RescaleSlope = _fmt_ds(rescale_slope)
    if modality == "CT":
        ds.RescaleType = "HU"
        ds.WindowCenter, ds.WindowWidth = "500", "4000"
    ds.LossyImageCompression = "00"
    for key, value in (extra or {}).items():
        setattr(ds, key, value)
    return ds


def _write_slices(ds: Dataset, volume: Volume, stored: np.ndarray, folder: Path, *, modality: str, series_uid: str,
                  series_number: int, extra: dict[str, Any] | None) -> list[Path]:
    """One file per ``k`` slice: its position, instance UID and pixels set on the shared header ``ds``."""
    d = volume.direction
    slice_dir, normal = d[:, 2], np.cross(d[:, 0], d[:, 1])
    sz = volume.spacing_mm[2]
    origin = np.asarray(volume.origin_mm)
    meta = ds.file_meta
    tag = hashlib.blake2b(series_uid.encode(), digest_size=3).hexdigest()
    paths: list[Path] = []
    folder.mkdir(parents=True, exist_ok=True)
    for k in range(stored.shape[0]):
        ipp = origin + k * sz * slice_dir
        sop_uid = generate_uid(entropy_srcs=[series_uid, "instance", str(k)])
        ds.SOPInstanceUID = sop_uid
        meta.MediaStorageSOPInstanceUID = sop_uid
        ds.InstanceNumber = k + 1
        ds.ImagePositionPatient = _ds_list(ipp)
        ds.SliceLocation = _fmt_ds(float(np.dot(ipp, normal)))
        ds.PixelData = stored[k].tobytes()
        if extra and "InstanceNumber" in extra:
            ds.InstanceNumber = extra["InstanceNumber"]
        path = folder / f"{modality}{int(series_number):04d}_{tag}_{k + 1:05d}.dcm"
        atomic_write(path, lambda tmp: ds.save_as(tmp, enforce_file_format=True))
        paths.append(path)
    return paths
