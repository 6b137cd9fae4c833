"""What the report reads of a ``segment`` output folder: the patients' records and their scans.

``segment`` keeps absolute input paths out of every file it writes (folder names often hold a
patient's name), so the scans are found again from the input given to ``report --input``: by the
path below it that a cohort run's summary.csv records, else by naming the patients found there
by the rule ``segment`` used. A scan counts as a patient's only when it lies on the grid of the
label written for it.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

from cochseg3d.export import OUTPUT_SUFFIXES
from cochseg3d.utils import display_path
from cochseg3d.volume import Volume

CONTACTS_SUFFIX = OUTPUT_SUFFIXES["contacts"]


def case_ids(seg_dir: Path) -> list[str]:
    """The patients of a segment output folder: one per ``<case>.contacts.json``, sorted."""
    return sorted(p.name[: -len(CONTACTS_SUFFIX)] for p in Path(seg_dir).glob(f"*{CONTACTS_SUFFIX}"))


def read_record(seg_dir: Path, case_id: str) -> dict[str, Any]:
    """``<case>.contacts.json`` as written by ``segment``.

    Raises:
        ValueError: it cannot be read, is not JSON, or lacks ``contacts_lps_mm`` (the message names the file).
    """
    path = Path(seg_dir) / f"{case_id}{CONTACTS_SUFFIX}"
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"{display_path(path)}: cannot be read ({exc})") from None
    except json.JSONDecodeError as exc:
        raise ValueError(f"{display_path(path)}: not valid JSON ({exc})") from None
    if not isinstance(record, dict) or not isinstance(record.get("contacts_lps_mm"), list):
        raise ValueError(f"{display_path(path)}: not a cochseg3d contacts file (no 'contacts_lps_mm' list)")
    if not isinstance(record.get("arrays", []), list) or not isinstance(record.get("qc") or {}, dict):
        raise ValueError(f"{display_path(path)}: 'arrays' is not a list or 'qc' not an object")
    return record


def failed_cases(seg_dir: Path) -> list[dict[str, str]]:
    """The patients ``segment`` could not do, from summary.json's ``failed`` ([] without one)."""
    try:
        doc = json.loads((Path(seg_dir) / "summary.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return []
    failed = doc.get("failed") if isinstance(doc, dict) else None
    return [f for f in failed or [] if isinstance(f, dict) and f.get("case_id")]


def recorded_inputs(seg_dir: Path) -> dict[str, str]:
    """Case id -> input path below the folder given to ``segment``, from its summary.csv ({} without)."""
    try:
        rows = list(csv.DictReader((Path(seg_dir) / "summary.csv").read_text(encoding="utf-8").splitlines()))
    except (OSError, UnicodeDecodeError, csv.Error):
        return {}
    return {r["case_id"]: r["input"] for r in rows if r.get("case_id") and r.get("input")}


def find_sources(input: Path | None, wanted: list[str], seg_dir: Path | None = None) -> dict[str, Path]:
    """Case id -> scan path under ``input``: as summary.csv in ``seg_dir`` records it, else as
    ``segment INPUT`` named its patients.

    A single patient is named by its scan's own case id (``load_input``'s, as ``segment`` does),
    so it is loaded once here; several are named by their file or folder names.
    """
    from cochseg3d.inputs import case_ids
    from cochseg3d.inputs import find_inputs
    from cochseg3d.utils import sanitize_case_id

    if input is None:
        return {}
    recorded = {cid: input / rel for cid, rel in recorded_inputs(seg_dir).items()} if seg_dir else {}
    recorded = {cid: p for cid, p in recorded.items() if cid in wanted and p.exists()}
    if len(recorded) == len(wanted):
        return recorded
    paths = find_inputs(input)
    ids = case_ids(paths)
    if len(paths) == 1:
        if len(wanted) == 1:
            return {wanted[0]: paths[0]}  # checked against the label's grid when loaded
        ids = [sanitize_case_id(_load(paths[0]).meta.get("case_id") or paths[0].name)]
    return {**{cid: p for cid, p in zip(ids, paths) if cid in wanted}, **recorded}


def _load(path: Path) -> Volume:
    from cochseg3d.dicom import load_input

    return load_input(path)


def load_scan(source: Path | None, label: Volume | None) -> tuple[Volume | None, str]:
    """The patient's scan and '' when it loads onto the label's grid, else None and why not."""
    if source is None:
        return None, "the source image was not given (report --input COHORT, the folder given to segment)"
    if label is None:
        return None, "no label to overlay"
    from cochseg3d.inputs import scrub_path

    try:
        image = _load(source)
    except (OSError, ValueError) as exc:  # the page names the case, never the input path
        return None, f"the source image could not be loaded: {scrub_path(' '.join(str(exc).split()), source, 'scan')}"
    if not image.grid.allclose(label.grid):
        return None, "the image found for this case does not lie on its label's grid (another scan?)"
    return image, ""


def read_label(seg_dir: Path, case_id: str) -> tuple[Volume | None, str]:
    """``<case>.nii.gz`` and '', or None and why it is missing."""
    from cochseg3d.volume import read_image

    path = Path(seg_dir) / f"{case_id}.nii.gz"
    if not path.exists():
        return None, f"{path.name} is missing"
    try:
        return read_image(path), ""
    except (OSError, ValueError, RuntimeError) as exc:
        return None, f"{path.name} could not be read: {' '.join(str(exc).split())}"
