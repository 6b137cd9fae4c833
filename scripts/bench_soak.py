#!/usr/bin/env python
"""Benchmark: one ``cochseg3d segment`` cohort run over many phantom patients; does its memory grow?

Generates ``--patients`` small phantom patients (DICOM folders with the generator's clutter) with
``cochseg3d phantom``, segments them in ONE ``cochseg3d segment`` process, and samples that process's
resident memory (VmRSS) against the number of patients done. The figure is the growth from the start
(median RSS over patients 5-15, once the model and the imports are warm) to the end (median over the last
10), as a ratio of the start: the target is at most 10 %. Results go to BENCHMARKS.md (section ``soak``)
and a plot to docs/soak_rss.png.

    .venv/bin/python scripts/bench_soak.py                    # 200 patients (the stated target)
    .venv/bin/python scripts/bench_soak.py --patients 30 --no-write-md   # quick look
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))

from benchlib import proc_status_mb, update_section  # noqa: E402

PLOT = ROOT / "docs" / "soak_rss.png"


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "cochseg3d", *args]


def generate(inp: Path, patients: int, seed: int) -> float:
    """The phantom cohort (skipped when ``inp`` already holds it); seconds taken."""
    if (inp / "cohort.json").is_file() and len(json.loads((inp / "cohort.json").read_text())) == patients:
        return 0.0
    shutil.rmtree(inp, ignore_errors=True)
    t0 = time.perf_counter()
    subprocess.run(_cli("phantom", str(inp), "--patients", str(patients), "--seed", str(seed), "--preset", "small",
                        "--orientation", "mixed", "--no-progress"), check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - t0


def soak(inp: Path, out: Path, every_s: float) -> tuple[list[tuple[float, int, float]], float, int]:
    """Run segment on the cohort, sampling (seconds, patients done, RSS MiB); returns the samples,
    the peak (VmHWM, MiB) and the exit code."""
    shutil.rmtree(out, ignore_errors=True)
    proc = subprocess.Popen(_cli("segment", str(inp), "-o", str(out), "--no-png"),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    samples, peak, t0 = [], 0.0, time.perf_counter()
    while proc.poll() is None:
        rss, hwm = proc_status_mb("VmRSS", proc.pid), proc_status_mb("VmHWM", proc.pid)
        if not math.isnan(rss):  # NaN once the process has gone
            done = sum(1 for _ in out.glob("*.contacts.json")) if out.is_dir() else 0
            samples.append((time.perf_counter() - t0, done, rss))
            peak = max(peak, 0.0 if math.isnan(hwm) else hwm)
        time.sleep(every_s)
    return samples, peak, proc.returncode


def growth(samples: list[tuple[float, int, float]], patients: int) -> dict[str, float]:
    """Start (patients 5-15 done) and end (the last 10) median RSS and the growth between them."""
    start = [r for _, d, r in samples if 5 <= d < 15]
    end = [r for _, d, r in samples if d >= patients - 10]
    if not start or not end:
        raise SystemExit(f"too few samples to compare ({len(start)} at the start, {len(end)} at the end)")
    s, e = statistics.median(start), statistics.median(end)
    warm = [r for _, d, r in samples if d >= 5]  # not the interpreter starting up
    return {"start_mb": s, "end_mb": e, "growth": e / s - 1.0, "min_mb": min(warm), "max_mb": max(warm)}


def outcome(out: Path) -> dict[str, int]:
    """Patients ok / failed in summary.csv, and output files that do not read back whole."""
    import nibabel as nib

    with open(out / "summary.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    broken = 0
    for p in out.glob("*.nii.gz"):
        try:
            nib.load(p).get_fdata()
        except Exception:  # a partial file of any kind counts
            broken += 1
    for p in out.glob("*.json"):
        try:
            json.loads(p.read_text())
        except ValueError:
            broken += 1
    return {"ok": sum(r.get("status") == "ok" for r in rows), "failed": sum(r.get("status") != "ok" for r in rows),
            "broken_files": broken}


def plot(samples: list[tuple[float, int, float]], g: dict[str, float], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3), dpi=110)
    ax.plot([d for _, d, _ in samples], [r for *_, r in samples], lw=1)
    ax.axhline(g["start_mb"] * 1.1, ls="--", c="r", lw=0.8, label="start + 10 %")
    ax.set_xlabel("patients done")
    ax.set_ylabel("segment process RSS (MiB)")
    ax.legend(loc="lower right")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    return path


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--patients", type=int, default=200)
    ap.add_argument("--seed", type=int, default=993000)
    ap.add_argument("--work", type=Path, default=ROOT / "build" / "soak")
    ap.add_argument("--every-s", type=float, default=0.25, help="RSS sampling interval")
    ap.add_argument("--no-write-md", action="store_true")
    args = ap.parse_args(argv)
    if args.patients < 25:
        ap.error("--patients: at least 25 (start and end windows of 10 patients each)")
    t_gen = generate(args.work / "in", args.patients, args.seed)
    t0 = time.perf_counter()
    samples, peak, rc = soak(args.work / "in", args.work / "out", args.every_s)
    wall = time.perf_counter() - t0
    g, res = growth(samples, args.patients), outcome(args.work / "out")
    print(json.dumps({"rc": rc, "wall_s": round(wall, 1), "generate_s": round(t_gen, 1), "peak_mb": round(peak, 1),
                      **{k: round(v, 3) for k, v in g.items()}, **res}, indent=1))
    if args.no_write_md:
        return 0 if rc == 0 else 1
    plot(samples, g, PLOT)
    verdict = "within" if g["growth"] <= 0.10 else "**beyond**"
    body = f"""One `cochseg3d segment` process over a cohort folder of {args.patients} small phantom patients (96^3 at
0.4 mm, DICOM with the generator's clutter, mixed orientations; seeds from {args.seed}), the shipped model on the
CPU, `--no-png`. Its resident memory sampled every {args.every_s} s against the patients done (plot:
`docs/soak_rss.png`). Peer: the same process's own start (median RSS once 5-15 patients were done, after
the imports and the model are warm).

| patients | exit | ok / failed | files not whole | wall s | s / patient | RSS start MiB | RSS end MiB | growth | peak (VmHWM) MiB |
|---|---|---|---|---|---|---|---|---|---|
| {args.patients} | {rc} | {res['ok']} / {res['failed']} | {res['broken_files']} | {wall:.0f} | {wall / args.patients:.2f} | {g['start_mb']:.0f} | {g['end_mb']:.0f} | {100 * g['growth']:+.1f} % | {peak:.0f} |

Growth {verdict} the 10 % target (RSS over the run {g['min_mb']:.0f}-{g['max_mb']:.0f} MiB).

![segment RSS against patients done](docs/soak_rss.png)
"""
    command = "python scripts/bench_soak.py " + " ".join(argv if argv is not None else sys.argv[1:])
    update_section("soak", "Soak: one segment run over a 200-patient cohort (memory growth)", body,
                   command=command.strip())
    return 0 if rc == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
