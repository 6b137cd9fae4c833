"""`cochseg3d segment COHORT/ -o OUT/` left overnight: it resumes where it stopped, keeps summary.csv
up to date after each patient, and passes over unreadable patients.

The network is :class:`tests.helpers.BrightDetector` standing in for a checkpoint (its answer is known
and it costs nothing); the patients are tiny DICOM series written by ``phantom.dicom_write``.
"""

from __future__ import annotations

import csv
import json
import logging
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

import cochseg3d.inference
import cochseg3d.pipeline
from cochseg3d.cli import main
from cochseg3d.cohort_summary import COLUMNS, Summary, done_record, row, wanted_files
from cochseg3d.phantom.dicom_write import write_series
from cochseg3d.preprocessing import Preprocessing
from cochseg3d.volume import Volume
from tests.helpers import bright_model

PRE = Preprocessing(spacing_mm=0.4, roi_size=(32, 32))
GOOD = ["p0", "p1", "p2"]
BAD = ["notes", "trunc"]  # a folder without DICOM files, and one of truncated DICOM files
ARGS = ["--device", "cpu", "--no-png", "--electrode", "MED-EL"]


def _wire(shape=(16, 36, 36), spacing_mm=0.3) -> Volume:
    """A bright arc (3000 HU), 3 mm radius and 1 mm thick, in soft tissue."""
    vol = Volume(np.full(shape, 40.0, np.float32), (spacing_mm,) * 3, (0.0, 0.0, 0.0), np.eye(3))
    kk, jj, ii = np.indices(shape)
    rel = (np.stack([ii, jj, kk], -1) - np.array(shape[::-1]) / 2.0) * spacing_mm
    wire = (np.abs(np.hypot(rel[..., 0], rel[..., 1]) - 3.0) < 0.5) & (np.abs(rel[..., 2] - 0.2 * rel[..., 0]) < 0.5)
    vol.array[wire & (rel[..., 1] > -1.0)] = 3000.0
    return vol


def _bright_load_model(checkpoint=None, *, device="cpu"):
    model = bright_model(PRE)
    model.cochseg3d_path = "bright"
    return model, PRE, {"path": "bright"}


class _Lines(logging.Handler):
    def __init__(self):
        super().__init__()
        self.lines: list[tuple[int, str]] = []

    def emit(self, record):
        self.lines.append((record.levelno, record.getMessage()))


def _segment(cohort: Path, out: Path, *extra: str) -> tuple[int, list[tuple[int, str]]]:
    """``cochseg3d segment cohort -o out``: exit status and what it logged."""
    handler = _Lines()
    logger = logging.getLogger("cochseg3d")
    logger.addHandler(handler)
    level, logger.level = logger.level, logging.INFO  # as the CLI's own logging set-up has it
    try:
        return main(["segment", str(cohort), "-o", str(out), *ARGS, *extra]), handler.lines
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


def _rows(out: Path) -> dict[str, dict[str, str]]:
    with open(out / "summary.csv", newline="", encoding="utf-8") as f:
        return {r["case_id"]: r for r in csv.DictReader(f)}


def _mtimes(out: Path, cases) -> dict[str, int]:
    return {p.name: p.stat().st_mtime_ns for c in cases for p in out.glob(f"{c}.*")}


@pytest.fixture(scope="module")
def bright():
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(cochseg3d.inference, "load_model", _bright_load_model)
        yield


@pytest.fixture(scope="module")
def first(tmp_path_factory, bright):
    """A cohort of three patients and two unreadable folders, segmented once."""
    root = tmp_path_factory.mktemp("cohort")
    cohort = root / "in"
    for n, case in enumerate(GOOD):
        write_series(_wire(), cohort / case, patient_id=f"PAT{n}", uid_seed=case)
    (cohort / "notes").mkdir()
    (cohort / "notes" / "README.txt").write_text("scanned on the old machine")
    for f in write_series(_wire(), cohort / "trunc", patient_id="PATX", uid_seed="trunc"):
        f.write_bytes(f.read_bytes()[:400])
    rc, lines = _segment(cohort, root / "out")
    return cohort, root / "out", rc, lines


@pytest.fixture
def again(first, tmp_path):
    """A copy of the first run's output folder (file times kept), to run the cohort on again."""
    cohort, out, _, _ = first
    shutil.copytree(out, tmp_path / "out")
    return cohort, tmp_path / "out"


def test_first_run_summary_has_a_row_per_patient_and_bad_ones_do_not_stop_the_rest(first):
    cohort, out, rc, lines = first
    assert rc == 1  # some patients failed
    header = (out / "summary.csv").read_text(encoding="utf-8").splitlines()[0]
    assert header.split(",") == list(COLUMNS)
    rows = _rows(out)
    assert sorted(rows) == sorted(GOOD + BAD)
    for case in GOOD:
        r = rows[case]
        rec = json.loads((out / f"{case}.contacts.json").read_text())
        assert (r["status"], r["input"], r["error"]) == ("ok", case, "")
        assert r["qc_verdict"] == rec["qc"]["verdict"] and r["qc_reasons"] == "; ".join(rec["qc"]["reasons"])
        assert int(r["n_contacts"]) == rec["n_contacts"] > 0
        assert r["electrode_model"] == "FLEXSOFT"  # MED-EL's array, as contacts.json measured it
        assert float(r["seconds"]) > 0
    for case in BAD:
        assert rows[case]["status"] == "failed" and rows[case]["n_contacts"] == ""
        assert "no image volume series" in rows[case]["error"]
        assert str(cohort) not in rows[case]["error"]  # summary.csv is shared: no input paths
    # one error line per bad patient, naming its folder and the reason
    errors = [m for lev, m in lines if lev >= logging.ERROR]
    assert len(errors) == 2
    for case, why in (("notes", "README.txt: not a DICOM file"), ("trunc", "no image (SOP class unknown)")):
        (line,) = [m for m in errors if m.startswith(f"{case} failed: ")]
        assert str(cohort / case) in line and "no image volume series" in line and why in line
        assert "\n" not in line
    assert not list(out.glob(".*tmp*"))  # no temporary left by the atomic writes


def test_rerun_skips_done_patients_and_retries_failed_ones(again):
    cohort, out = again
    before, rows_before = _mtimes(out, GOOD), _rows(out)
    rc, lines = _segment(cohort, out)
    assert rc == 1  # the unreadable patients were tried again and failed again
    assert _mtimes(out, GOOD) == before  # the done patients' files untouched
    rows = _rows(out)
    for case in GOOD:
        assert rows[case]["status"] == "skipped-done"
        for col in ("qc_verdict", "qc_reasons", "n_contacts", "electrode_model", "seconds"):
            assert rows[case][col] == rows_before[case][col], col
    assert [rows[c]["status"] for c in BAD] == ["failed", "failed"]
    assert len([m for _, m in lines if "already done" in m]) == len(GOOD)  # one line per skipped patient
    assert len([m for lev, m in lines if lev >= logging.ERROR]) == len(BAD)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["done"] == [] and sorted(s["case_id"] for s in summary["skipped"]) == GOOD
    assert sum(summary["qc"][v] for v in ("ok", "review", "fail")) == len(GOOD)  # QC over the whole cohort
    arrays = (out / "arrays.csv").read_text().splitlines()
    assert {r.split(",")[0] for r in arrays[1:]} == set(GOOD)  # the cohort table still has every patient


def test_overwrite_segments_done_patients_again(again):
    cohort, out = again
    for p in out.iterdir():
        os.utime(p, ns=(1_000_000_000, 1_000_000_000))  # 1970: any rewrite is seen
    rc, lines = _segment(cohort, out, "--overwrite")
    assert rc == 1
    assert all(t > 1_000_000_000 for t in _mtimes(out, GOOD).values())
    assert [_rows(out)[c]["status"] for c in GOOD] == ["ok"] * 3
    assert not [m for _, m in lines if "already done" in m]


def test_a_run_killed_half_way_through_a_patient_is_redone(again):
    cohort, out = again
    (out / "p2.contacts.json").unlink()  # killed before the patient's last file
    # killed while rewriting p1: its label is newer than the contacts.json of the earlier run
    later = (out / "p1.contacts.json").stat().st_mtime_ns + 5_000_000_000
    os.utime(out / "p1.nii.gz", ns=(later, later))
    p0 = _mtimes(out, ["p0"])
    assert _segment(cohort, out)[0] == 1
    rows = _rows(out)
    assert [rows[c]["status"] for c in GOOD] == ["skipped-done", "ok", "ok"]
    assert _mtimes(out, ["p0"]) == p0
    rec = json.loads((out / "p2.contacts.json").read_text())
    assert rec["case_id"] == "p2" and int(rows["p2"]["n_contacts"]) == rec["n_contacts"]
    assert done_record(out, "p1", wanted_files(out, "p1", png=False, probabilities=False, dicom_seg=False))


def test_a_file_the_earlier_run_did_not_write_makes_the_patient_not_done(again):
    cohort, out = again
    assert _segment(cohort, out, "--probabilities")[0] == 1
    assert [_rows(out)[c]["status"] for c in GOOD] == ["ok"] * 3
    assert all((out / f"{c}.prob.nii.gz").is_file() for c in GOOD)


def test_summary_is_written_after_each_patient_and_survives_an_interrupt(first, tmp_path, bright, monkeypatch):
    cohort, _, _, _ = first
    out = tmp_path / "out"
    real, seen = cochseg3d.pipeline.segment, []

    def segment_and_watch(src, *args, **kwargs):
        seen.append((Path(src).name, sorted(_rows(out)) if (out / "summary.csv").exists() else []))
        if Path(src).name == "p1":
            raise KeyboardInterrupt  # Ctrl-C (or a kill) in the middle of the third patient
        return real(src, *args, **kwargs)

    monkeypatch.setattr(cochseg3d.pipeline, "segment", segment_and_watch)
    assert _segment(cohort, out)[0] == 130
    # patients go in name order; each found the rows of those before it in summary.csv
    assert seen == [("notes", []), ("p0", ["notes"]), ("p1", ["notes", "p0"])]
    assert {c: r["status"] for c, r in _rows(out).items()} == {"notes": "failed", "p0": "ok"}
    monkeypatch.setattr(cochseg3d.pipeline, "segment", real)
    assert _segment(cohort, out)[0] == 1
    rows = _rows(out)
    assert [rows[c]["status"] for c in GOOD] == ["skipped-done", "ok", "ok"]


def test_rows_of_other_patients_are_kept_and_a_foreign_summary_is_refused(again, capsys):
    cohort, out = again
    gone = row("gone", "gone", "ok", seconds=3.5)
    book = Summary(out / "summary.csv")
    book.update(gone)
    assert _segment(cohort, out)[0] == 1
    assert _rows(out)["gone"] == gone  # a patient not in this run keeps its earlier row
    (out / "summary.csv").write_text("name,score\nx,1\n")
    capsys.readouterr()
    assert _segment(cohort, out)[0] == 2
    assert f"{out / 'summary.csv'}: not a cochseg3d summary" in capsys.readouterr().err
    assert (out / "summary.csv").read_text() == "name,score\nx,1\n"  # left as it was


def test_done_record_wants_every_file_and_the_marker_written_last(tmp_path):
    wanted = wanted_files(tmp_path, "c1", png=True, probabilities=False, dicom_seg=False)
    assert [p.name for p in wanted] == ["c1.nii.gz", "c1.png"]
    for p in wanted:
        p.write_bytes(b"x")
    marker = tmp_path / "c1.contacts.json"
    assert done_record(tmp_path, "c1", wanted) is None  # no contacts.json
    marker.write_text("{not json")
    assert done_record(tmp_path, "c1", wanted) is None
    marker.write_text(json.dumps({"case_id": "c2", "qc": {"verdict": "ok"}}))
    assert done_record(tmp_path, "c1", wanted) is None  # another case's record
    marker.write_text(json.dumps({"case_id": "c1"}))
    assert done_record(tmp_path, "c1", wanted) is None  # no QC verdict: not what segment writes
    marker.write_text(json.dumps({"case_id": "c1", "qc": {"verdict": "ok", "reasons": []}}))
    assert done_record(tmp_path, "c1", wanted)["case_id"] == "c1"
    t = marker.stat().st_mtime_ns + 1_000_000_000
    os.utime(wanted[1], ns=(t, t))  # the PNG rewritten after contacts.json
    assert done_record(tmp_path, "c1", wanted) is None
    wanted[1].unlink()
    assert done_record(tmp_path, "c1", wanted) is None
    # a DICOM SEG is wanted of a DICOM series only (a NIfTI input gets none)
    wanted = wanted_files(tmp_path, "c1", png=False, probabilities=False, dicom_seg=True)
    assert done_record(tmp_path, "c1", wanted)["case_id"] == "c1"
    marker.write_text(json.dumps({"case_id": "c1", "qc": {"verdict": "ok"}, "series": {"series_uid": "1.2.3"}}))
    assert done_record(tmp_path, "c1", wanted) is None
    (tmp_path / "c1.seg.dcm").write_bytes(b"x")
    os.utime(tmp_path / "c1.seg.dcm", ns=(0, 0))
    os.utime(wanted[0], ns=(0, 0))
    assert done_record(tmp_path, "c1", wanted)["case_id"] == "c1"
    with pytest.raises(ValueError, match="status must be one of"):
        row("c1", "c1", "done")


def test_memory_a_finished_patient_freed_goes_back_to_the_system():
    from cochseg3d.utils import release_freed_memory

    if not release_freed_memory() or not Path("/proc/self/status").is_file():
        pytest.skip("needs glibc and /proc")

    def rss_mb() -> float:
        line = next(x for x in Path("/proc/self/status").read_text().splitlines() if x.startswith("VmRSS:"))
        return int(line.split()[1]) / 1024

    blocks = [bytes(4000) + bytes([i % 256]) for i in range(50_000)]  # ~200 MB through malloc, not mmap
    keep = bytes(4000) + b"x"  # allocated above them: the heap cannot shrink from its top by itself
    del blocks
    before = rss_mb()
    release_freed_memory()
    assert before - rss_mb() > 100, "freed blocks stayed resident"
    assert keep
