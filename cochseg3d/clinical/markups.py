"""Exports clinicians open: 3D Slicer markups (.mrk.json), the per-contact CSV, the cohort CSV row.

Markups follow Slicer's markups schema v1.0.3
(https://raw.githubusercontent.com/slicer/slicer/master/Modules/Loadable/Markups/Resources/Schema/markups-schema-v1.0.3.json):
a top-level ``@schema`` and ``markups`` list; each markup a ``type`` ("Fiducial" here) with
``coordinateSystem`` "LPS", ``coordinateUnits`` "mm" and ``controlPoints`` of ``id`` / ``label`` /
``position`` (3 numbers) / ``positionStatus``. The contacts are one markup (points E1..EN in the
vendor's numbering), the cochlear frame a second (origin and the tips of unit x, y, z).
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import numpy as np

from cochseg3d.volume import atomic_write

SCHEMA_URL = ("https://raw.githubusercontent.com/slicer/slicer/master/Modules/Loadable/Markups/Resources/Schema/"
              "markups-schema-v1.0.3.json#")
CONTACT_COLUMNS = ("array", "side", "model", "name", "x_lps_mm", "y_lps_mm", "z_lps_mm", "angle_deg", "depth_mm",
                   "modiolus_distance_mm", "inside_cochlea", "frequency_oc_hz", "frequency_sg_hz")
COHORT_COLUMNS = ("case_id", "array", "side", "vendor", "model", "n_contacts", "insertion_angle_deg",
                  "insertion_depth_mm", "extracochlear_contacts", "fold_over", "kink", "out_of_order",
                  "frame_confidence", "reason")


def _points(name: str, labels: list[str], positions: list, color: list[float], descriptions=None) -> dict:
    descriptions = descriptions or [""] * len(labels)
    return {
        "type": "Fiducial", "name": name, "coordinateSystem": "LPS", "coordinateUnits": "mm", "locked": True,
        "fixedNumberOfControlPoints": True, "labelFormat": "%N-%d",
        "controlPoints": [{"id": str(i + 1), "label": lab, "description": desc,
                           "position": [float(v) for v in pos], "positionStatus": "defined",
                           "orientation": [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0],
                           "selected": True, "locked": True, "visibility": True}
                          for i, (lab, pos, desc) in enumerate(zip(labels, positions, descriptions))],
        "display": {"visibility": True, "color": color, "selectedColor": color, "pointLabelsVisibility": True,
                    "glyphScale": 1.5, "textScale": 2.5},
    }


def markups(arrays: dict, *, case_id: str = "") -> dict:
    """Slicer markups of every array of ``arrays`` (the record of :func:`measure_arrays`)."""
    out = []
    for k, a in enumerate(arrays.get("arrays", [])):
        tag = f"{case_id} " if case_id else ""
        tag += f"array {k + 1}" + (f" ({a['side']})" if a.get("side") else "")
        cs = a.get("contacts") or []
        if cs:
            desc = [f"{c['angle_deg']} deg, {c['depth_mm']} mm" if "angle_deg" in c else "" for c in cs]
            out.append(_points(f"{tag} contacts", [c["name"] for c in cs], [c["lps_mm"] for c in cs],
                               [1.0, 0.85, 0.1], desc))
        f = a.get("cochlear_frame") or {}
        if "origin_lps_mm" in f:
            o = np.asarray(f["origin_lps_mm"])
            pts = [o] + [o + np.asarray(f[ax]) for ax in ("x_lps", "y_lps", "z_lps")]
            out.append(_points(f"{tag} cochlear frame", ["origin", "x (round window)", "y", "z (apex)"],
                               [np.round(p, 4) for p in pts], [0.3, 0.8, 1.0],
                               [f"confidence {f.get('confidence')}", "", "", ""]))
    return {"@schema": SCHEMA_URL, "markups": out}


def _atomic_write(path: Path, text: str) -> None:
    """``text`` as UTF-8, line endings as given (the CSV writer's), via the package's atomic write."""
    atomic_write(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8", newline=""))


def write_markups(path: str | Path, arrays: dict, *, case_id: str = "") -> Path:
    """Write ``OUT/<case>.contacts.mrk.json`` (atomic)."""
    path = Path(path)
    _atomic_write(path, json.dumps(markups(arrays, case_id=case_id), indent=2))
    return path


def contact_rows(arrays: dict) -> list[dict]:
    """One row per contact of every array (CONTACT_COLUMNS)."""
    rows = []
    for k, a in enumerate(arrays.get("arrays", [])):
        for c in a.get("contacts") or []:
            f = c.get("frequency_hz") or {}
            rows.append({"array": k + 1, "side": a.get("side") or "", "model": a.get("model") or "",
                         "name": c["name"], "x_lps_mm": c["lps_mm"][0], "y_lps_mm": c["lps_mm"][1],
                         "z_lps_mm": c["lps_mm"][2], "angle_deg": c.get("angle_deg", ""),
                         "depth_mm": c.get("depth_mm", ""), "modiolus_distance_mm": c.get("modiolus_distance_mm", ""),
                         "inside_cochlea": c.get("inside_cochlea", ""),
                         "frequency_oc_hz": f.get("organ_of_corti_greenwood1990") or "",
                         "frequency_sg_hz": f.get("spiral_ganglion_stakhovskaya2007") or ""})
    return rows


def cohort_rows(arrays: dict, *, case_id: str) -> list[dict]:
    """One row per array (COHORT_COLUMNS) for the cohort table."""
    rows = []
    for k, a in enumerate(arrays.get("arrays", [])):
        fl = a.get("flags") or {}
        rows.append({"case_id": case_id, "array": k + 1, "side": a.get("side") or "", "vendor": a.get("vendor") or "",
                     "model": a.get("model") or "", "n_contacts": a.get("n_contacts", 0),
                     "insertion_angle_deg": a.get("insertion_angle_deg", ""),
                     "insertion_depth_mm": a.get("insertion_depth_mm", ""),
                     "extracochlear_contacts": a.get("extracochlear_contacts", ""),
                     **{n: (fl[n]["value"] if n in fl else "") for n in ("fold_over", "kink", "out_of_order")},
                     "frame_confidence": (a.get("cochlear_frame") or {}).get("confidence", ""),
                     "reason": a.get("reason", "")})
    return rows


def csv_text(rows: list[dict], columns: tuple[str, ...], *, header: bool = True) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(columns), lineterminator="\n")
    if header:
        w.writeheader()
    w.writerows(rows)
    return buf.getvalue()


def write_contacts_csv(path: str | Path, arrays: dict) -> Path:
    """The per-contact table of one patient (atomic)."""
    path = Path(path)
    _atomic_write(path, csv_text(contact_rows(arrays), CONTACT_COLUMNS))
    return path


def append_cohort_csv(path: str | Path, arrays: dict, *, case_id: str) -> Path:
    """Add this patient's arrays to the cohort table, writing the header when the file is new."""
    path = Path(path)
    old = path.read_text(encoding="utf-8") if path.exists() else ""
    text = old + csv_text(cohort_rows(arrays, case_id=case_id), COHORT_COLUMNS, header=not old)
    _atomic_write(path, text)
    return path
