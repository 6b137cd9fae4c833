"""Every writer verb of the real CLI killed with SIGKILL: what it leaves is whole, and a rerun mends it.

Each verb runs as its own ``python`` process through a small hook (``HOOK``) that logs every rename
of a temporary onto its final name and, when asked, SIGKILLs its own process at the n-th one (the
temporary optionally cut in half first, as a kill mid-write leaves it). A clean run's log proves that
every output file was renamed into place (none written under its final name); a run killed over a
good earlier output must leave each file old or new and whole; the rerun succeeds, removes the dead
writer's temporaries and leaves the clean run's set of files. Slow tests kill from outside at moments
seen by polling the output folder. Every process runs under a timeout.
"""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest

from cochseg3d.volume import is_temporary

REPO = Path(__file__).resolve().parents[1]
TIMEOUT_S = 300  # the machine may be loaded; a hang still ends the test

#: runs ``python -m cochseg3d`` with os.replace watched: KILL_LOG lists each rename of a temporary,
#: KILL_AT=n SIGKILLs the process at the n-th one (KILL_MODE=truncated: its temporary cut in half first)
HOOK = r"""
import os, runpy, signal, sys
from cochseg3d.volume import is_temporary
log, at, mode = os.environ.get("KILL_LOG"), int(os.environ.get("KILL_AT", "0")), os.environ.get("KILL_MODE")
real, count = os.replace, [0]
def replace(src, dst, *a, **k):
    if is_temporary(os.fsdecode(src)):
        count[0] += 1
        if count[0] == at:
            if mode == "truncated":
                os.truncate(src, os.path.getsize(src) // 2)
            os.kill(os.getpid(), signal.SIGKILL)
        if log:
            with open(log, "a") as f:
                f.write(os.path.abspath(os.fsdecode(dst)) + "\n")
    return real(src, dst, *a, **k)
os.replace = replace
sys.argv[0] = "cochseg3d"
runpy.run_module("cochseg3d", run_name="__main__", alter_sys=True)
"""

SEG = ["--device", "cpu", "--electrode", "MED-EL"]
#: verb -> argv given (input folder, output folder); every one may write over an earlier output
VERBS = {
    "segment": lambda inp, out: ["segment", str(inp / "p0"), "-o", str(out), *SEG],
    "convert": lambda inp, out: ["convert", str(inp), str(out), "--no-progress"],
    "coronal": lambda inp, out: ["coronal", str(inp / "p0"), str(out)],
    "phantom": lambda inp, out: ["phantom", str(out), "--patients", "1", "--no-progress"],
    "export-bundle": lambda inp, out: ["export-bundle", str(out), "--overwrite"],
}


def _env(**extra: str) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO), "TQDM_DISABLE": "1", "CUDA_VISIBLE_DEVICES": "",
            "MPLBACKEND": "Agg", "OMP_NUM_THREADS": "1", **extra}


def _run(argv: list[str], cwd: Path, **hook: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", HOOK, *argv], cwd=cwd, capture_output=True, text=True,
                          timeout=TIMEOUT_S, env=_env(**hook))


@pytest.fixture(scope="module")
def patients(tmp_path_factory) -> Path:
    from cochseg3d.phantom.dicom_write import write_series
    from tests.test_segment_cohort import _wire  # the bright arc the shipped model segments

    root = tmp_path_factory.mktemp("patients")
    for n in range(3):
        write_series(_wire(), root / f"p{n}", patient_id=f"PAT{n}", uid_seed=f"p{n}")
    return root


@pytest.fixture(scope="module")
def clean(tmp_path_factory, patients):
    """verb -> (output folder of a clean run, the renames its log holds); one run per verb, on demand."""
    done: dict[str, tuple[Path, list[str]]] = {}

    def get(verb: str) -> tuple[Path, list[str]]:
        if verb not in done:
            work = tmp_path_factory.mktemp(f"clean_{verb}")
            log = work / "renames.log"
            res = _run(VERBS[verb](patients, work / "out"), work, KILL_LOG=str(log))
            assert res.returncode == 0, res.stderr[-3000:]
            out = work / "out"
            done[verb] = out, [os.path.relpath(p, out) for p in log.read_text().splitlines()]
        return done[verb]

    return get


# --- what "whole" means, per kind of file ---------------------------------------------------------------
def _whole_csv(path: Path) -> None:
    text = path.read_text(encoding="utf-8")
    assert text.endswith("\n"), "no final newline"
    rows = list(csv.reader(io.StringIO(text)))
    assert rows and all(len(r) == len(rows[0]) for r in rows), "ragged rows"


def _whole_dicom(path: Path) -> None:
    import pydicom

    ds = pydicom.dcmread(path)
    if "PixelData" in ds:
        ds.pixel_array  # noqa: B018 - reads every pixel


def _whole_nifti(path: Path) -> None:
    import nibabel as nib

    np.asarray(nib.load(str(path)).dataobj)  # a truncated gzip stream fails here


def _whole_png(path: Path) -> None:
    from PIL import Image

    with Image.open(path) as img:
        img.load()


def _whole_zip(path: Path) -> None:  # torch's .pt is a zip archive
    with zipfile.ZipFile(path) as z:
        assert z.testzip() is None


def _whole_yaml(path: Path) -> None:
    import yaml

    yaml.safe_load(path.read_text(encoding="utf-8"))


CHECKS = {".nii.gz": _whole_nifti, ".nii": _whole_nifti, ".json": lambda p: json.loads(p.read_text("utf-8")),
          ".csv": _whole_csv, ".dcm": _whole_dicom, ".png": _whole_png, ".pt": _whole_zip, ".yaml": _whole_yaml}


def _check_whole(path: Path, old: Path | None = None) -> None:
    """``path`` reads as its kind; a file of no checkable kind must equal a clean run's when one is given."""
    if path.name.startswith("._") or path.suffix in (".txt", ".md", ".ctbl"):
        if old is not None and old.is_file():
            assert path.read_bytes() == old.read_bytes()
        return
    kind = ".nii.gz" if path.name.endswith(".nii.gz") else path.suffix
    if kind == ".lock" or kind not in CHECKS:
        assert kind == ".lock" or path.stat().st_size > 0, f"{path.name}: empty"
        return
    try:
        CHECKS[kind](path)
    except Exception as exc:  # noqa: BLE001 - any failure to read is a partial file
        raise AssertionError(f"{path}: not whole ({type(exc).__name__}: {exc})") from None


def _files(out: Path) -> tuple[set[str], set[str]]:
    """(final files, temporaries) under ``out``, as paths relative to it."""
    final, temps = set(), set()
    for p in out.rglob("*"):
        if p.is_file():
            (temps if is_temporary(p) else final).add(str(p.relative_to(out)))
    return final, temps


def _assert_all_whole(out: Path, reference: Path | None = None) -> set[str]:
    final, temps = _files(out)
    for rel in sorted(final):
        _check_whole(out / rel, reference / rel if reference else None)
    return temps


# --- fast: a kill at a rename, over a good earlier output ---------------------------------------------------
@pytest.mark.parametrize("verb", list(VERBS))
def test_a_clean_run_renames_every_output_into_place(verb, clean):
    out, renames = clean(verb)
    final, temps = _files(out)
    assert not temps
    assert final - {".summary.csv.lock"} <= set(renames), "written under its final name, not renamed into place"
    _assert_all_whole(out)


def _kill_over_old_output(verb, clean, patients, tmp_path, at: int, mode: str) -> Path:
    """The verb killed at rename ``at`` over a copy of a clean output, checked, then rerun and checked."""
    old, renames = clean(verb)
    out = tmp_path / "out"
    shutil.copytree(old, out)
    argv = VERBS[verb](patients, out)
    res = _run(argv, tmp_path, KILL_AT=str(at if at > 0 else len(renames) + at + 1), KILL_MODE=mode)
    assert res.returncode == -signal.SIGKILL, f"the kill did not land: rc {res.returncode}\n{res.stderr[-2000:]}"
    temps = _assert_all_whole(out, old)
    assert temps, "the killed writer's temporary is gone"
    final, _ = _files(out)
    # segment's <case>.contacts.json marks a patient done: removed first and written last on purpose,
    # so a resumed cohort run never takes a half-rewritten patient for finished
    missing = {m for m in _files(old)[0] - final if not (verb == "segment" and m.endswith(".contacts.json"))}
    assert not missing, f"an earlier good output lost (neither old nor new): {sorted(missing)[:5]}"
    res = _run(argv, tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    left = _assert_all_whole(out, old)
    assert not left, f"the rerun left the dead writer's temporaries: {sorted(left)}"
    assert _files(out)[0] == _files(old)[0]
    return out


@pytest.mark.parametrize("verb", list(VERBS))
def test_killed_mid_write_over_an_earlier_output_leaves_old_or_new_and_a_rerun_mends_it(verb, clean, patients,
                                                                                        tmp_path):
    n = len(clean(verb)[1])
    _kill_over_old_output(verb, clean, patients, tmp_path, max(1, n // 2), "truncated")


def test_an_export_killed_in_a_fresh_folder_is_redone_without_overwrite(clean, patients, tmp_path):
    ref, renames = clean("export-bundle")
    out = tmp_path / "out"
    argv = ["export-bundle", str(out)]
    res = _run(argv, tmp_path, KILL_AT=str(max(2, len(renames) // 2)), KILL_MODE="truncated")
    assert res.returncode == -signal.SIGKILL, f"the kill did not land: rc {res.returncode}\n{res.stderr[-2000:]}"
    res = _run(argv, tmp_path)  # the folder holds only what the killed export wrote: no --overwrite needed
    assert res.returncode == 0, res.stderr[-3000:]
    assert not _assert_all_whole(out, ref) and _files(out)[0] == _files(ref)[0]


@pytest.mark.slow
@pytest.mark.parametrize("at,mode", [(1, "whole"), (1, "truncated"), (-1, "whole"), (2, "truncated")])
@pytest.mark.parametrize("verb", list(VERBS))
def test_killed_at_first_and_last_renames(verb, at, mode, clean, patients, tmp_path):
    _kill_over_old_output(verb, clean, patients, tmp_path, at, mode)


# --- slow: SIGKILL from outside, at moments seen in the output folder ---------------------------------------
def _kill_when(argv: list[str], cwd: Path, out: Path, seen) -> int:
    """Start the verb, poll ``out`` and SIGKILL it once ``seen(final, temps)``; its exit status."""
    proc = subprocess.Popen([sys.executable, "-m", "cochseg3d", *argv], cwd=cwd, env=_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + TIMEOUT_S
    try:
        while proc.poll() is None and time.monotonic() < deadline:
            if out.is_dir() and seen(*_files(out)):
                proc.send_signal(signal.SIGKILL)
                break
            time.sleep(0.002)
        return proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=60)


MOMENTS = {
    "first_temporary": lambda n: lambda final, temps: bool(temps),
    "first_file": lambda n: lambda final, temps: bool(final - {".summary.csv.lock"}),
    "half_the_files": lambda n: lambda final, temps: len(final) >= max(1, n // 2),
}


@pytest.mark.slow
@pytest.mark.parametrize("moment", list(MOMENTS))
@pytest.mark.parametrize("verb", list(VERBS))
def test_killed_from_outside_leaves_whole_files_and_a_rerun_finishes(verb, moment, clean, patients, tmp_path):
    ref, _ = clean(verb)
    n = len(_files(ref)[0])
    out = tmp_path / "out"
    argv = VERBS[verb](patients, out)
    _kill_when(argv, tmp_path, out, MOMENTS[moment](n))  # may also have finished first: still checked
    _assert_all_whole(out, ref)
    res = _run(argv, tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    assert not _assert_all_whole(out, ref)
    assert _files(out)[0] == _files(ref)[0]


# --- two segment runs into one folder at once -------------------------------------------------------------
def test_two_segment_runs_into_one_folder_at_once_both_finish_whole(patients, tmp_path):
    cohorts = {"a": ["p0", "p1"], "b": ["p1", "p2"]}  # p1 written by both
    for name, cases in cohorts.items():
        for c in cases:
            shutil.copytree(patients / c, tmp_path / name / c)
    out = tmp_path / "out"
    procs = [subprocess.Popen([sys.executable, "-m", "cochseg3d", "segment", str(tmp_path / name), "-o", str(out),
                               *SEG, "--no-png"], cwd=tmp_path, env=_env(), stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for name in cohorts]
    try:
        results = [p.communicate(timeout=TIMEOUT_S) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait(timeout=60)
    for p, (_, err) in zip(procs, results):
        assert p.returncode == 0, err[-3000:]
    assert not _assert_all_whole(out)
    with open(out / "summary.csv", newline="", encoding="utf-8") as f:
        rows = {r["case_id"]: r for r in csv.DictReader(f)}
    assert set(rows) == {"p0", "p1", "p2"}
    assert all(r["status"] == "ok" for r in rows.values()), rows
    for c in rows:
        assert (out / f"{c}.nii.gz").is_file()
