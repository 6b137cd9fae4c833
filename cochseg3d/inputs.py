"""What ``segment`` was pointed at: the patients under a path (beside the DICOM reader, :mod:`.dicom`).

A path is one image file, one patient's DICOM folder (its files right there, or series sub-folders
of one patient and study), a phantom cohort folder (``cohort.json``), or a folder of many patients.
Only regular files are opened: a named pipe or a device among the files is passed over, never read.
"""

from __future__ import annotations

from pathlib import Path

from cochseg3d.utils import read_cohort_json, sanitize_case_id
from cochseg3d.volume import is_image_file


def is_image_path(path: Path) -> bool:
    """True for a NIfTI / NRRD / MHA file name (not DICOM)."""
    return is_image_file(path)


def _is_dicom_file(path: Path) -> bool:
    """True for a DICOM Part 10 file, or a preamble-less one naming its SOP class; README.txt is not.

    The one rule the reader uses too (:func:`cochseg3d.dicom_header.is_dicom_file`), so inspect,
    convert and segment agree on a folder; pipes and devices are never opened.
    """
    from cochseg3d.dicom_header import is_dicom_file

    return is_dicom_file(path)


def _first_dicom_header(folder: Path) -> tuple[str, str] | None:
    """(PatientID, StudyInstanceUID) of the first readable DICOM file under ``folder``."""
    import pydicom

    for p in sorted(folder.rglob("*")):
        if p.is_file() and not p.name.startswith(".") and not is_image_path(p) and _is_dicom_file(p):
            try:
                ds = pydicom.dcmread(p, stop_before_pixels=True, force=True,
                                     specific_tags=["PatientID", "StudyInstanceUID"])
            except Exception:  # unreadable after all: keep looking
                continue
            return str(ds.get("PatientID", "")), str(ds.get("StudyInstanceUID", ""))
    return None


def find_inputs(path: str | Path) -> list[Path]:
    """The patients under ``path``: one image file, one DICOM folder, or a folder of many.

    A folder is one patient when it holds DICOM files itself, or when all its sub-folders belong to
    one patient and study (series folders). Otherwise every image file and every sub-folder in it
    is a patient. A phantom cohort folder (``cohort.json``) lists its patients' DICOM folders.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: ``path`` is neither a regular file nor a folder, or its cohort.json is broken.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file or folder")
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise ValueError(f"{path}: neither a regular file nor a folder")
    cohort = path / "cohort.json"
    if cohort.is_file():
        return [path / e["dicom"] for e in read_cohort_json(cohort, required=("dicom",))]
    children = sorted(p for p in path.iterdir() if not p.name.startswith("."))
    files = [p for p in children if p.is_file()]
    if any(_is_dicom_file(p) for p in files if not is_image_path(p)):
        return [path]  # DICOM files right here: one patient
    images = [p for p in files if is_image_path(p)]
    folders = [p for p in children if p.is_dir()]
    if folders and not images:
        ids = {h for h in (_first_dicom_header(f) for f in folders) if h is not None}
        if len({pid for pid, _ in ids}) <= 1 and len({st for _, st in ids}) <= 1:
            return [path]  # series sub-folders of one patient
    return images + folders


def case_ids(cases: list[Path]) -> list[str | None]:
    """Case ids of a cohort: patients of one folder may share a PatientID, their names keep them apart."""
    if len(cases) < 2:
        return [None] * len(cases)
    used: set[str] = set()
    ids = []
    for src in cases:
        case_id = sanitize_case_id(src.name.split(".")[0] if src.is_file() else src.name)
        if src.name == "DICOM":  # phantom cohort layout <case>/DICOM
            case_id = sanitize_case_id(src.parent.name)
        while case_id in used:
            case_id += "_b"
        used.add(case_id)
        ids.append(case_id)
    return ids


def scrub_path(text: str, src: Path, case_id: str) -> str:
    """An error message with the input path replaced by the case id (summary.json is shared)."""
    for p in sorted({str(src.resolve()), str(src)}, key=len, reverse=True):
        text = text.replace(p, f"<{case_id}>")
    return text
