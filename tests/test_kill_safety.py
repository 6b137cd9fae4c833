"""What a killed or concurrent writer leaves: temporaries named by their writer's pid, removed by
the next run and never read as DICOM; summary.csv rows of two runs in one folder both kept."""

from __future__ import annotations

import os
from pathlib import Path

from cochseg3d.cohort_summary import Summary, row
from cochseg3d.dicom_header import read_file_header
from cochseg3d.volume import atomic_write, is_temporary, remove_stale_temporaries


def _dead_pid() -> int:
    pid = os.fork()
    if pid == 0:
        os._exit(0)
    os.waitpid(pid, 0)
    return pid


def test_stale_temporaries_of_a_dead_writer_are_removed_and_live_ones_kept(tmp_path):
    names = []
    atomic_write(tmp_path / "a.nii.gz", lambda tmp: names.append(tmp.name) or tmp.write_text("x"))
    assert is_temporary(names[0]) and not is_temporary("a.nii.gz") and not is_temporary(".hidden")
    dead = tmp_path / f".CT0002_abcdef_00001.{_dead_pid()}.k2j4h5g6.tmp.dcm"
    dead.write_bytes(b"\x00" * 200)  # a slice cut short by SIGKILL
    live = tmp_path / f".b.nii.{os.getpid()}.abcdefgh.tmp.nii.gz"
    live.write_bytes(b"")
    assert "interrupted write" in read_file_header(dead).reason
    assert remove_stale_temporaries(tmp_path) == [dead]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["a.nii.gz", live.name])


def test_two_runs_rewriting_one_summary_keep_each_others_rows(tmp_path):
    path = tmp_path / "summary.csv"
    first, second = Summary(path), Summary(path)  # both read the folder before either wrote
    first.update(row("p1", "p1", "ok"))
    second.update(row("p2", "p2", "failed", error="x"))
    first.update(row("p3", "p3", "ok"))
    assert set(Summary(path).rows) == {"p1", "p2", "p3"}
    assert Summary(path).rows["p2"]["status"] == "failed"
