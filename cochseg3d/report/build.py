"""The report folder and the loop over patients: one bad patient costs its page only."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from cochseg3d.report import html
from cochseg3d.report.sources import case_ids, failed_cases, find_sources, load_scan, read_label, read_record
from cochseg3d.utils import check_output_folder, display_path
from cochseg3d.volume import atomic_write

log = logging.getLogger(__name__)

#: the file that says a folder was written by ``cochseg3d report`` (and may be written again)
MARKER = ".cochseg3d-report.json"


@dataclass(frozen=True)
class ReportResult:
    """What :func:`write_report` wrote: the index, the page of each patient, why the others failed."""

    index: Path
    pages: dict[str, Path] = field(default_factory=dict)
    failed: dict[str, str] = field(default_factory=dict)


def prepare_folder(out: Path) -> None:
    """Create ``out`` with its marker; refuse a non-empty folder that has no marker.

    Raises:
        ValueError: ``out`` (or a folder above it) is a file, or holds files not written by the report.
    """
    from cochseg3d import __version__

    check_output_folder(out)
    if out.is_dir() and any(out.iterdir()) and not (out / MARKER).is_file():
        raise ValueError(f"{display_path(out)}: exists and was not written by cochseg3d report (no {MARKER}); "
                         "choose another --out or move it away")
    out.mkdir(parents=True, exist_ok=True)
    stamp = {"written_by": "cochseg3d report", "version": __version__,
             "time": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")}
    _write_text(out / MARKER, json.dumps(stamp, indent=1))


def _write_text(path: Path, text: str) -> Path:
    return atomic_write(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))


def no_array_reason(record: dict[str, Any]) -> str:
    """Why a record has no measured array (segment records ``arrays`` empty in two cases)."""
    if not record.get("contacts_lps_mm"):
        return (f"no contacts were found on the label (contact finder: {record.get('method', 'none')}); "
                "the QC reasons above say what the segmentation showed")
    return "the cochlear measures could not be computed for the contacts found (segment's log says why)"


def render_patient(seg_dir: Path, case_id: str, record: dict[str, Any], source: Path | None) -> str:
    """One patient's HTML: overlays when the scan is found, else the reason; arrays or why there are none."""
    from cochseg3d.report.figures import VIEWS, cochlear_3d, overlay, unrolled

    label, why = read_label(seg_dir, case_id)
    image, why = load_scan(source, label) if label is not None else (None, why)
    overlays = {}
    if image is not None:
        overlays = {v: overlay(image, label, v, contacts_lps_mm=record["contacts_lps_mm"]) for v in VIEWS}
    arrays = record.get("arrays") or []
    sections = [html.array_section(n + 1, a, {"cochlear_3d": cochlear_3d(a), "unrolled": unrolled(a)})
                for n, a in enumerate(arrays)]
    return html.patient_page(case_id, record, overlays=overlays, image_note=why, arrays_html=sections,
                             no_array_reason="" if arrays else no_array_reason(record),
                             fitted_array_html=html.fitted_array_section(case_id, record.get("array_label")))


def index_row(case_id: str, record: dict[str, Any]) -> dict[str, Any]:
    """The cohort index's row of one patient."""
    arrays = record.get("arrays") or []
    angles = [a["insertion_angle_deg"] for a in arrays if a.get("insertion_angle_deg") is not None]
    raised = [f"{k.replace('_', ' ')}" for a in arrays for k, f in (a.get("flags") or {}).items()
              if (f or {}).get("value")]
    extra = [a["extracochlear_contacts"] for a in arrays if a.get("extracochlear_contacts") is not None]
    return {"case_id": case_id, "verdict": (record.get("qc") or {}).get("verdict"),
            "n_contacts": record.get("n_contacts", len(record["contacts_lps_mm"])),
            "insertion_angle": "; ".join(str(a) for a in angles) or "–",
            "extracochlear": sum(extra) if extra else "–",
            "flags": ", ".join(raised) or ("none" if arrays else "–"),
            "note": next((a["reason"] for a in arrays if a.get("reason")), "" if arrays else "no array measured")}


def write_report(seg_dir: str | Path, out: str | Path | None = None, *,
                 input: str | Path | None = None) -> ReportResult:
    """The pages of every patient of ``seg_dir`` (a ``segment -o`` folder) and ``index.html`` in ``out``.

    Args:
        seg_dir: the folder ``segment`` wrote (``<case>.contacts.json``, ``<case>.nii.gz``, summary.json).
        out: the report folder (default ``seg_dir/report``); an existing one must hold the report's marker.
        input: what was given to ``segment`` (a patient or a cohort folder), to find the scans for the
            overlays; without it the pages say the image is not available.

    Returns:
        :class:`ReportResult`; a patient whose files cannot be read is in ``failed`` with the reason.

    Raises:
        FileNotFoundError: ``seg_dir`` or ``input`` does not exist.
        ValueError: ``seg_dir`` holds no patients, or ``out`` is refused (:func:`prepare_folder`).
    """
    seg_dir = Path(seg_dir)
    if not seg_dir.is_dir():
        raise FileNotFoundError(f"{display_path(seg_dir)}: no such folder")
    cases, seg_failed = case_ids(seg_dir), failed_cases(seg_dir)
    if not cases and not seg_failed:
        raise ValueError(f"{display_path(seg_dir)}: no <case>.contacts.json; not a cochseg3d segment output folder")
    sources = find_sources(Path(input) if input is not None else None, cases, seg_dir)  # a bad --input fails first
    out = Path(out) if out is not None else seg_dir / "report"
    prepare_folder(out)
    rows, pages, failed = [], {}, {}
    for cid in cases:
        try:
            record = read_record(seg_dir, cid)
            pages[cid] = _write_text(out / f"{cid}.html", render_patient(seg_dir, cid, record, sources.get(cid)))
            rows.append({**index_row(cid, record), "page": pages[cid].name})
        except Exception as exc:  # one bad patient must not stop the rest
            failed[cid] = str(exc) if isinstance(exc, ValueError) else f"{type(exc).__name__}: {exc}"
            log.debug("%s: page not written", cid, exc_info=True)
            rows.append({"case_id": cid, "verdict": "report failed", "note": failed[cid]})
    rows += [{"case_id": f["case_id"], "verdict": "segment failed", "note": f.get("error", "")}
             for f in seg_failed if f["case_id"] not in cases]
    index = _write_text(out / "index.html", html.index_page(rows))
    return ReportResult(index=index, pages=pages, failed=failed)
