"""The bookkeeping of a cohort run: which patients are already done, and ``summary.csv``.

A patient is done when its ``<case>.contacts.json`` is there, names the case, and no other file of
the patient is newer: :func:`cochseg3d.export.write_outputs` removes the old contacts.json first and
writes the new one last (each file atomically), so a run killed half-way through a patient leaves
it not done. ``summary.csv`` has one row per patient and is rewritten atomically after each one,
keeping the rows of earlier runs for the patients not run again.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
from pathlib import Path
from typing import Any

from cochseg3d.export import output_path
from cochseg3d.utils import display_path
from cochseg3d.volume import atomic_write

COLUMNS = ("case_id", "input", "status", "qc_verdict", "qc_reasons", "n_contacts", "electrode_model", "seconds",
           "error")
#: what a row's status says: segmented in this run, failed in it, or left as an earlier run made it
STATUSES = ("ok", "failed", "skipped-done")


def wanted_files(out: Path, case_id: str, *, png: bool, probabilities: bool, dicom_seg: bool) -> list[Path]:
    """The files besides contacts.json that a run with these options writes for ``case_id``."""
    kinds = ["label"]
    if probabilities:
        kinds.append("probability")
    if png:
        kinds.append("png")
    if dicom_seg:
        kinds.append("seg")
    return [output_path(out, case_id, k) for k in kinds]


def done_record(out: Path, case_id: str, wanted: list[Path]) -> dict[str, Any] | None:
    """The contacts.json record of a finished patient, or None when it has to be (re)done.

    Not done: no contacts.json, one that does not parse, names another case or has no QC verdict
    (``segment(qc=False)``), a wanted file missing, or one newer than contacts.json (a later run
    stopped while rewriting the patient). A DICOM SEG is wanted only of a DICOM series.
    """
    marker = output_path(out, case_id, "contacts")
    try:
        finished = marker.stat().st_mtime_ns
        record = json.loads(marker.read_text(encoding="utf-8"))
        if not isinstance(record, dict) or record.get("case_id") != case_id or not isinstance(record.get("qc"), dict):
            return None
        if not (record.get("series") or {}).get("series_uid"):  # not a DICOM series: it gets no DICOM SEG
            wanted = [f for f in wanted if f != output_path(out, case_id, "seg")]
        for f in wanted:
            if f.stat().st_mtime_ns > finished:
                return None
    except (OSError, ValueError):
        return None
    return record


def electrode_model(record: dict[str, Any]) -> str:
    """The electrode model(s) the contacts were placed for: measured arrays first, else the assumed one."""
    models = [a.get("model") for a in record.get("arrays") or [] if a.get("model")]
    if models:
        return "; ".join(dict.fromkeys(models))
    return record.get("model_assumed") or record.get("electrode_hint") or ""


def row(case_id: str, input: str, status: str, *, record: dict[str, Any] | None = None,
        seconds: float | str | None = None, error: str = "") -> dict[str, str]:
    """One summary.csv row; QC, contact count and model come from the patient's contacts.json ``record``."""
    if status not in STATUSES:
        raise ValueError(f"status must be one of {STATUSES}, got {status!r}")
    rec = record or {}
    qc = rec.get("qc") or {}
    return {"case_id": case_id, "input": input, "status": status, "qc_verdict": qc.get("verdict", ""),
            "qc_reasons": "; ".join(qc.get("reasons") or []),
            "n_contacts": "" if record is None else str(rec.get("n_contacts", "")),
            "electrode_model": electrode_model(rec) if record is not None else "",
            "seconds": "" if seconds in (None, "") else (f"{seconds:.2f}" if isinstance(seconds, float) else seconds),
            "error": " ".join(error.split())}


class Summary:
    """``summary.csv`` of an output folder: the earlier rows, updated one patient at a time.

    Two runs may share an output folder: each rewrite takes a lock beside the file
    (``.summary.csv.lock``), reads the rows the other run wrote since, and keeps them, so neither
    run's rows are lost and the file is always whole.
    """

    def __init__(self, path: Path):
        self.path = Path(path)
        self.rows: dict[str, dict[str, str]] = _read(self.path)
        self._mine: dict[str, dict[str, str]] = {}  # the rows this run set

    def seconds(self, case_id: str) -> str:
        """The earlier row's seconds (what producing the patient's files took), '' if unknown."""
        return self.rows.get(case_id, {}).get("seconds", "")

    def set(self, r: dict[str, str]) -> None:
        """Set the patient's row (in memory; :meth:`write` puts it in the file)."""
        self.rows[r["case_id"]] = r
        self._mine[r["case_id"]] = r

    def update(self, r: dict[str, str]) -> None:
        """Set the patient's row and rewrite the file."""
        self.set(r)
        self.write()

    def write(self) -> None:
        """Rewrite the file atomically: a reader sees the old rows or the new ones, never half."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with _locked(self.path.with_name(f".{self.path.name}.lock")):
            try:
                self.rows = {**_read(self.path), **self._mine}  # another run's rows since we read it
            except ValueError:
                pass  # replaced by a foreign file meanwhile: our rows win
            buf = io.StringIO()
            w = csv.DictWriter(buf, fieldnames=list(COLUMNS), lineterminator="\n")
            w.writeheader()
            w.writerows(self.rows.values())
            text = buf.getvalue()
            atomic_write(self.path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))


@contextlib.contextmanager
def _locked(lock: Path):
    """An exclusive ``flock`` on ``lock`` (released when the process dies, so a killed run never
    leaves it held); where the file system has no locks, the atomic rename alone keeps files whole."""
    try:
        import fcntl
    except ImportError:  # Windows
        yield
        return
    with open(lock, "a") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX)
        except OSError:
            pass
        yield


def _read(path: Path) -> dict[str, dict[str, str]]:
    """The rows of an earlier summary.csv by case id ({} when there is none).

    Raises:
        ValueError: the file is there but is not a summary.csv (it is not overwritten).
    """
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"{display_path(path)}: cannot be read ({exc}); move it away to start a new one") from None
    reader = csv.DictReader(io.StringIO(text))
    if not reader.fieldnames or not {"case_id", "status"} <= set(reader.fieldnames):
        raise ValueError(f"{display_path(path)}: not a cochseg3d summary (no case_id and status columns); "
                         "move it away or choose another output folder")
    return {r["case_id"]: {c: r.get(c) or "" for c in COLUMNS} for r in reader if r.get("case_id")}
