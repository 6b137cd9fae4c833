#!/usr/bin/env python
"""Benchmark: load a DICOM series with cochseg3d vs SimpleITK, dcm2niix and dicom2nifti; discovery.

Writes a synthetic CT series (``--slices`` x ``--size`` x ``--size``, int16) with
``cochseg3d.phantom.dicom_write.write_series``, then times each reader in its own fresh process (so the
peak resident memory, VmHWM, is that reader's alone) on the same warm page cache, and times
header-only discovery of a folder of ``--discover-files`` files against GDCM's scanner (SimpleITK)
and a naive full pydicom read. Results go to BENCHMARKS.md (section ``load``).

    .venv/bin/python scripts/bench_load.py                 # 600 x 512 x 512 (the stated target)
    .venv/bin/python scripts/bench_load.py --slices 100 --size 256 --no-write-md   # quick look
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

from benchlib import proc_status_mb as _status_mb  # noqa: E402


def _rchar() -> int:
    for line in Path("/proc/self/io").read_text().splitlines():
        if line.startswith("rchar:"):
            return int(line.split()[1])
    return 0


# --- workers: each runs in a fresh process ---------------------------------------------------------
# each reader returns (its figures, the array read or None, RSS and bytes read just before its clock starts)
Timed = tuple[dict, Any, float, int]


def _time_cochseg3d(folder: str, scratch: str, *, trace: bool = False) -> Timed:
    import tracemalloc

    from cochseg3d.dicom import discover, load_series

    out: dict = {}
    rss0, io0 = _status_mb("VmRSS"), _rchar()
    if trace:  # a separate run: tracing slows every allocation
        tracemalloc.start()
    t0 = time.perf_counter()
    [info] = [s for s in discover(folder) if s.is_volume]
    t1 = time.perf_counter()
    vol = load_series(info)
    t2 = time.perf_counter()
    out.update(seconds=t2 - t0, discover_s=t1 - t0, load_s=t2 - t1)
    if tracemalloc.is_tracing():
        out["tracemalloc_peak_mb"] = tracemalloc.get_traced_memory()[1] / 2**20
        tracemalloc.stop()
    return out, vol.array, rss0, io0


def _time_simpleitk(folder: str, scratch: str) -> Timed:
    import SimpleITK as sitk

    out: dict = {}
    rss0, io0 = _status_mb("VmRSS"), _rchar()
    t0 = time.perf_counter()
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(folder))
    img = reader.Execute()
    arr = sitk.GetArrayViewFromImage(img)
    out.update(seconds=time.perf_counter() - t0)
    return out, arr, rss0, io0


def _time_dcm2niix(folder: str, scratch: str) -> Timed:
    import resource

    import dcm2niix

    out: dict = {}
    rss0, io0 = _status_mb("VmRSS"), _rchar()
    t0 = time.perf_counter()
    subprocess.run([dcm2niix.bin, "-z", "n", "-b", "n", "-f", "d2n", "-o", scratch, folder],
                   check=True, capture_output=True)
    out.update(seconds=time.perf_counter() - t0, note="includes writing an uncompressed NIfTI")
    out["child_peak_mb"] = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    return out, None, rss0, io0


def _time_dicom2nifti(folder: str, scratch: str) -> Timed:
    import logging

    import dicom2nifti
    import dicom2nifti.settings as settings
    import numpy as np

    out: dict = {}
    logging.getLogger("dicom2nifti").setLevel(logging.ERROR)
    settings.disable_validate_slice_increment()
    rss0, io0 = _status_mb("VmRSS"), _rchar()
    t0 = time.perf_counter()
    res = dicom2nifti.convert_dicom.dicom_series_to_nifti(
        folder, os.path.join(scratch, "d2n.nii"), reorient_nifti=False)
    out.update(seconds=time.perf_counter() - t0, note="includes writing an uncompressed NIfTI")
    arr = np.asanyarray(res["NII"].dataobj) if "NII" in res else None
    return out, arr, rss0, io0


def _time_discover(folder: str, scratch: str) -> Timed:
    from cochseg3d.dicom import discover

    out: dict = {}
    rss0, io0 = _status_mb("VmRSS"), _rchar()
    t0 = time.perf_counter()
    found = discover(folder)
    out.update(seconds=time.perf_counter() - t0, series=len(found),
               files=sum(len(s.slices) for s in found) + len(found.all_skipped))
    return out, None, rss0, io0


def _time_gdcm_scan(folder: str, scratch: str) -> Timed:
    import SimpleITK as sitk

    out: dict = {}
    rss0, io0 = _status_mb("VmRSS"), _rchar()
    t0 = time.perf_counter()
    ids = sitk.ImageSeriesReader.GetGDCMSeriesIDs(folder)
    files = [sitk.ImageSeriesReader.GetGDCMSeriesFileNames(folder, i) for i in ids]
    out.update(seconds=time.perf_counter() - t0, series=len(ids), files=sum(len(f) for f in files))
    return out, None, rss0, io0


def _time_pydicom_full(folder: str, scratch: str) -> Timed:
    import pydicom

    out: dict = {}
    rss0, io0 = _status_mb("VmRSS"), _rchar()
    t0 = time.perf_counter()
    n = 0
    for root, _, files in os.walk(folder):
        for f in files:
            try:  # what a naive scan does: read everything, pixels included
                pydicom.dcmread(os.path.join(root, f)).pixel_array  # noqa: B018
                n += 1
            except Exception:
                pass
    out.update(seconds=time.perf_counter() - t0, files=n)
    return out, None, rss0, io0


WORKERS: dict[str, Callable[[str, str], Timed]] = {
    "cochseg3d": _time_cochseg3d,
    "cochseg3d_tracemalloc": partial(_time_cochseg3d, trace=True),
    "simpleitk": _time_simpleitk,
    "dcm2niix": _time_dcm2niix,
    "dicom2nifti": _time_dicom2nifti,
    "discover": _time_discover,
    "gdcm_scan": _time_gdcm_scan,
    "pydicom_full": _time_pydicom_full,
}


def worker(name: str, folder: str, scratch: str) -> dict:
    # loaded before any reader's baseline RSS is taken, as they always were
    import resource  # noqa: F401

    import numpy as np  # noqa: F401

    if name not in WORKERS:
        raise SystemExit(f"unknown worker {name}")
    out, arr, rss0, io0 = WORKERS[name](folder, scratch)
    out["peak_rss_mb"] = _status_mb("VmHWM")
    out["rss_before_mb"] = rss0
    out["read_mb"] = (_rchar() - io0) / 2**20
    if arr is not None:
        out["array_mb"] = arr.nbytes / 2**20
        out["dtype"] = str(arr.dtype)
    return out


def run_worker(name: str, folder: Path, scratch: Path) -> dict:
    scratch.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    res = subprocess.run([sys.executable, __file__, "--worker", name, str(folder), str(scratch)],
                         capture_output=True, text=True, env=env)
    if res.returncode != 0:
        return {"error": res.stderr.strip().splitlines()[-1] if res.stderr.strip() else f"exit {res.returncode}"}
    shutil.rmtree(scratch, ignore_errors=True)
    return json.loads(res.stdout.strip().splitlines()[-1])


# --- data ----------------------------------------------------------------------------------------
def make_series(folder: Path, slices: int, size: int, *, seed: int = 0, series_number: int = 1,
                description: str = "bench") -> float:
    """A CT-like int16 volume (air, head, bone, metal wire) written as DICOM; returns seconds."""
    import numpy as np

    from cochseg3d.phantom.dicom_write import write_series
    from cochseg3d.volume import Volume

    rng = np.random.default_rng(seed)
    k, j, i = np.ogrid[:slices, :size, :size]
    r2 = ((j - size / 2) / (0.42 * size)) ** 2 + ((i - size / 2) / (0.38 * size)) ** 2
    arr = np.full((slices, size, size), -1000, np.int16)
    arr[np.broadcast_to(r2 < 1, arr.shape)] = 40
    arr[np.broadcast_to((r2 > 0.8) & (r2 < 1), arr.shape)] = 1200
    arr += rng.integers(-20, 20, size=(1, size, size), dtype=np.int16)  # cheap texture
    arr[slices // 3: slices // 3 + 4, size // 2, size // 3: size // 2] = 3000
    vol = Volume(arr, (0.3, 0.3, 0.3), (-size * 0.15, -size * 0.15, 0.0))
    t0 = time.perf_counter()
    write_series(vol, folder, patient_id="bench", uid_seed=f"bench{seed}", series_number=series_number,
                 series_description=description)
    return time.perf_counter() - t0


READERS = ["cochseg3d", "simpleitk", "dcm2niix", "dicom2nifti"]
DISCOVERERS = (("discover", "cochseg3d `discover` (headers only)"),
               ("gdcm_scan", "SimpleITK/GDCM series IDs + file names"),
               ("pydicom_full", "naive: pydicom full read + pixel_array"))


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--slices", type=int, default=600)
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--discover-files", type=int, default=1000,
                    help="files in the discovery folder: the series plus a second series making up the rest")
    ap.add_argument("--repeat", type=int, default=2, help="runs per reader (best time is reported)")
    ap.add_argument("--tmp", default=None, help="scratch folder (default: system temp)")
    ap.add_argument("--no-write-md", action="store_true", help="print only; leave BENCHMARKS.md alone")
    ap.add_argument("--worker", nargs=3, metavar=("NAME", "FOLDER", "SCRATCH"), help=argparse.SUPPRESS)
    return ap


def _best_reader_runs(series: Path, base: Path, repeat: int) -> dict[str, dict]:
    """Best run of each reader, plus cochseg3d's tracemalloc peak from a run of its own."""
    results: dict[str, dict] = {}
    for rep in range(repeat):
        for name in READERS:
            if rep and name in ("dcm2niix", "dicom2nifti"):
                continue  # converters write a file: one run is enough
            r = run_worker(name, series, base / f"scratch_{name}")
            print(f"  {name}: {r}", flush=True)
            if "error" in r or name not in results or r["seconds"] < results[name]["seconds"]:
                results[name] = r

    results["cochseg3d"]["tracemalloc_peak_mb"] = run_worker(
        "cochseg3d_tracemalloc", series, base / "scratch_tm").get("tracemalloc_peak_mb", float("nan"))
    return results


def _discovery_runs(series: Path, base: Path, discover_files: int, slices: int) -> tuple[dict[str, dict], float]:
    """Each discoverer's run on a patient folder; with the folder's size in MiB."""
    # discovery: the series plus a second, smaller series up to --discover-files files
    # one flat folder, as scanners export it (GDCM's series scan does not recurse)
    disc = base / "patient"
    shutil.copytree(series, disc)
    extra = max(0, discover_files - slices - 1)
    if extra:
        make_series(disc, extra, 128, seed=1, series_number=2, description="reformat")
    (disc / "README.txt").write_text("not dicom")
    disc_res = {}
    for name, _ in DISCOVERERS:
        disc_res[name] = run_worker(name, disc, base / f"scratch_{name}")
        print(f"  {name}: {disc_res[name]}", flush=True)
    total_mb = sum(p.stat().st_size for p in disc.rglob("*") if p.is_file()) / 2**20
    return disc_res, total_mb


def _reader_row(name: str, r: dict, ref: float, vol_mb: float) -> str:
    if "error" in r:
        return f"| {name} | - | - | - | - | failed: {r['error']} |"
    peak = r.get("child_peak_mb", r["peak_rss_mb"])
    growth = (r["peak_rss_mb"] - r["rss_before_mb"]) / vol_mb if "child_peak_mb" not in r else peak / vol_mb
    note = r.get("note", "")
    if name == "cochseg3d":
        tm = r["tracemalloc_peak_mb"]
        note = (f"`discover` {r['discover_s']:.2f} s + `load_series` {r['load_s']:.2f} s; "
                f"tracemalloc peak {tm:.0f} MiB = {tm / vol_mb:.2f}x volume; {r['dtype']}")
    elif name == "simpleitk":
        note = f"GetGDCMSeriesFileNames + Execute; {r.get('dtype', '')}"
    elif "dtype" in r:
        note = (note + "; " if note else "") + r["dtype"]
    if "child_peak_mb" in r:
        note += " (peak RSS of the dcm2niix process itself)"
    label = "cochseg3d `discover` + `load_series`" if name == "cochseg3d" else name
    return (f"| {label} | {r['seconds']:.2f} | {r['seconds'] / ref:.2f}x | {peak:.0f} | "
            f"{growth:.2f}x | {note} |")


def _reader_rows(results: dict[str, dict], vol_mb: float) -> list[str]:
    ours = results["cochseg3d"]
    ref = results["simpleitk"].get("seconds") or float("nan")
    rows = ["| reader | time (s) | time / SimpleITK | peak RSS (MiB) | RSS growth / volume | notes |",
            "| --- | ---: | ---: | ---: | ---: | --- |"]
    if "error" not in ours:
        rows.append(f"| cochseg3d `load_series` alone | {ours['load_s']:.2f} | {ours['load_s'] / ref:.2f}x | | | "
                    "after `discover` (headers), which the row below includes |")
    for name in READERS:
        rows.append(_reader_row(name, results[name], ref, vol_mb))
    return rows


def _discovery_rows(d: dict[str, dict], total_mb: float) -> list[str]:
    drow = ["| discovery of {} files ({:.0f} MiB) | time (s) | vs cochseg3d | bytes read (MiB) |".format(
        d["discover"].get("files", "?"), total_mb), "| --- | ---: | ---: | ---: |"]
    for name, label in DISCOVERERS:
        r = d[name]
        if "error" in r:
            drow.append(f"| {label} | failed: {r['error']} | | |")
            continue
        drow.append(f"| {label} | {r['seconds']:.2f} | {r['seconds'] / d['discover']['seconds']:.2f}x | "
                    f"{r['read_mb']:.1f} |")
    return drow


def _body(args: argparse.Namespace, vol_mb: float, t_write: float, rows: list[str], drow: list[str]) -> str:
    return "\n".join([
        f"Series: {args.slices} slices of {args.size}x{args.size}, int16, explicit VR little endian "
        f"({vol_mb:.0f} MiB as an int16 volume), written by `write_series` in {t_write:.1f} s; "
        f"every reader in its own fresh process on a warm page cache, best of {args.repeat} for the "
        "readers (one run for the converters, which also write a NIfTI). 'RSS growth / volume' = "
        "(peak RSS - RSS before reading) / int16 volume size. The goal: cochseg3d no slower than "
        "SimpleITK and peak memory <= 1.5x the volume.",
        "", *rows, "", *drow,
    ])


def main() -> int:
    args = _parser().parse_args()
    if args.worker:
        print(json.dumps(worker(*args.worker)))
        return 0

    base = Path(tempfile.mkdtemp(prefix="bench_load_", dir=args.tmp))
    try:
        series = base / "series"
        t_write = make_series(series, args.slices, args.size)
        vol_mb = args.slices * args.size * args.size * 2 / 2**20
        print(f"wrote {args.slices} x {args.size}^2 series ({vol_mb:.0f} MiB int16) in {t_write:.1f} s", flush=True)
        results = _best_reader_runs(series, base, args.repeat)
        disc_res, total_mb = _discovery_runs(series, base, args.discover_files, args.slices)
    finally:
        shutil.rmtree(base, ignore_errors=True)

    body = _body(args, vol_mb, t_write, _reader_rows(results, vol_mb), _discovery_rows(disc_res, total_mb))
    print(body)
    if not args.no_write_md:
        from benchlib import update_section

        update_section("load", "DICOM loading (issue 3)", body,
                       command=f"scripts/bench_load.py --slices {args.slices} --size {args.size}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
